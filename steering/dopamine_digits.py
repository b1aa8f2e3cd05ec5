"""The Dopamine paper's experiment (METHODS.md §H), reproduced on sklearn digits.

The 1797 digits are split per seed: 30 % test; of the rest, one half pretrains the base and
the other half specialises it (80 % fit, 20 % validation for early stopping). The specialising
images are new to the base, as when a foundation model is adapted to a new task: on these
1.8k images a base that trained on them fits them almost perfectly and leaves the gates
nothing to learn but noise (we measured it: gates then beat the frozen base on 2–3 of 5 seeds).

1. Pretrain an MLP (64 → h → h → 10, ReLU) on a 50/50 mix of its digits upright and rotated
   by 45°; freeze it.
2. Specialise it to the rotated mode three ways, on the same rotated images, the same step
   budget and the same early stopping (the best of every 25 steps on validation accuracy, ties
   broken by validation loss): nothing (the frozen base), Dopamine gates on both hidden layers (τ and g per unit,
   after the ReLU by default, before it with `gate_site="pre"`: 2 × h parameters per layer), and LoRA on every
   linear layer (the `peft` library, rank 4).
3. Score on held-out rotated digits: accuracy, trainable parameters, and the share of strongly
   active units (hidden activations above the mean positive activation of the base), for the
   gates smooth and hardened; and the images the hard gates fix and break against the frozen
   base (the discordant pairs of an exact McNemar test: one image is 0.19 points of accuracy).

`run(seed)` is one seed; `benchmarks/dopamine_digits.py` runs five and writes RESULTS.md;
`python -m steering.dopamine_digits --gate-site pre --seeds 1` runs seeds and prints them as JSON
(the gate site is a knob: the paper does not say whether its gates sit before or after the activation).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from .dopamine import GateSettings, UnitGates, attributions, fit, train_gates

HIDDEN = 128
SITES = ("post", "pre")  # where the gates sit on the hidden units: after the ReLU (default) or before it


def rotated_digits(angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 sklearn digits rotated by `angle` degrees (bilinear, same 8×8 frame): x [n, 64] in [0, 1], y [n]."""
    from scipy.ndimage import rotate
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = d.images / 16.0
    if angle:
        imgs = np.stack([rotate(im, angle, reshape=False, order=1, mode="constant") for im in imgs]).clip(0, 1)
    return torch.tensor(imgs.reshape(len(imgs), 64), dtype=torch.float32), torch.tensor(d.target)


@dataclass
class Split:
    """Indices into the digits: pretraining, specialisation (fit / validation) and test."""

    pretrain: torch.Tensor
    fit: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor


def split(n: int, seed: int) -> Split:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, test = perm[: int(0.7 * n)], perm[int(0.7 * n):]
    half = len(train) // 2
    spec = train[half:]
    cut = int(0.8 * len(spec))
    return Split(train[:half], spec[:cut], spec[cut:], test)


def mlp(hidden: int = HIDDEN) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


class Gated(nn.Module):
    """The frozen MLP with a gate on each hidden layer: after its ReLU (site "post") or before it ("pre")."""

    def __init__(self, base: nn.Sequential, settings: GateSettings) -> None:
        super().__init__()
        if settings.site not in SITES:
            raise ValueError(f"gate site {settings.site!r}: use {' or '.join(SITES)}")
        self.base = base
        self.site = settings.site
        width = base[0].out_features
        self.gates = nn.ModuleList([UnitGates(width, settings), UnitGates(width, settings)])

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The gated hidden activations [n, hidden] of both layers (after their ReLU)."""
        return _hidden(self.base, x, list(self.gates), self.site)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base[4](self.hidden(x)[1])


@dataclass
class DigitsResult:
    seed: int
    accuracy: dict[str, float]  # rotated held-out: frozen, gates (smooth), gates (hard), lora; upright for frozen
    parameters: dict[str, int]  # trainable
    strongly_active: dict[str, float]  # share of hidden units above the strong-activation level, per variant
    turned_off: int  # units firing in the base that the hard gates close (rotated inputs)
    fixed: int = 0  # held-out rotated digits the hard gates get right and the frozen base wrong
    broken: int = 0  # … and the other way round (fixed − broken = the accuracy difference in images)
    test_images: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def _strong_share(hidden: list[torch.Tensor], level: list[float]) -> float:
    return float(torch.cat([(h > l).float().flatten() for h, l in zip(hidden, level)]).mean())


def _hidden(base: nn.Sequential, x: torch.Tensor, gates: list[nn.Module] | None = None,
            site: str = "post") -> list[torch.Tensor]:
    """Both hidden layers' activations [n, hidden] after their ReLU, through `gates` when given: on the
    ReLU's output (site "post": ReLU then gate) or on its input (site "pre": gate then ReLU)."""
    gate = gates or [nn.Identity(), nn.Identity()]
    if site == "pre":
        h1 = base[1](gate[0](base[0](x)))
        return [h1, base[3](gate[1](base[2](h1)))]
    h1 = gate[0](base[1](base[0](x)))
    return [h1, gate[1](base[3](base[2](h1)))]


def _pre_activations(base: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Both hidden layers' pre-activations [n, hidden] in the frozen network (no gates)."""
    z1 = base[0](x)
    return [z1, base[2](base[1](z1))]


def run(seed: int = 0, *, hidden: int = HIDDEN, pretrain_steps: int = 1500, adapt_steps: int = 300,
        lora_rank: int = 4, gate_settings: GateSettings | None = None, gate_site: str | None = None,
        select: str = "accuracy+loss") -> DigitsResult:
    """One seed of the experiment (see the module docstring). select: the early-stopping score on the
    validation images: "accuracy", "accuracy+loss" (accuracy, ties broken by the lower cross-entropy:
    ~130 images tie often) or "loss" (minus the cross-entropy alone). gate_site: "post" or "pre" (overrides
    `gate_settings.site`; the paper does not say where its gates sit)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    up, labels = rotated_digits(0)
    rot, _ = rotated_digits(45)
    sp = split(len(labels), seed)
    mix_x = torch.cat([up[sp.pretrain], rot[sp.pretrain]])
    mix_y = torch.cat([labels[sp.pretrain], labels[sp.pretrain]])
    base = mlp(hidden)
    fit(base, base.parameters(), mix_x, mix_y, steps=pretrain_steps, lr=3e-3, batch_size=128, seed=seed)
    base.requires_grad_(False)
    base.eval()
    x_tr, y_tr, x_te, y_te = rot[sp.fit], labels[sp.fit], rot[sp.test], labels[sp.test]

    def right(model: nn.Module, x=x_te, y=y_te) -> torch.Tensor:
        with torch.no_grad():
            return model(x).argmax(-1) == y

    def acc(model: nn.Module, x=x_te, y=y_te) -> float:
        return float(right(model, x, y).float().mean())

    def on_validation(model: nn.Module):
        xv, yv = rot[sp.validation], labels[sp.validation]
        loss = lambda: -float(nn.functional.cross_entropy(model(xv), yv))  # noqa: E731
        if select == "loss":
            return loss
        if select == "accuracy+loss":
            return lambda: (acc(model, xv, yv), loss())
        if select != "accuracy":
            raise ValueError(f"select must be accuracy, accuracy+loss or loss, not {select!r}")
        return lambda: acc(model, xv, yv)

    settings = gate_settings or GateSettings(steps=adapt_steps, seed=seed)
    if gate_site is not None:
        settings = replace(settings, site=gate_site)
    gated = Gated(base, settings)
    train_gates(gated, list(gated.gates), x_tr, y_tr, settings, validate=on_validation(gated))
    with torch.no_grad():
        for g in gated.gates:
            g.hard = False
        smooth_hidden = gated.hidden(x_te)
        smooth = acc(gated)
        for g in gated.gates:
            g.hard = True
        hard_hidden = gated.hidden(x_te)
        gates_right, base_right = right(gated), right(base)
        hard = float(gates_right.float().mean())
        base_hidden = _hidden(base, x_te)
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank,
                                                          target_modules=["0", "2", "4"], lora_dropout=0.0))
    lora.eval()
    fit(lora, [p for p in lora.parameters() if p.requires_grad], x_tr, y_tr, steps=adapt_steps, lr=3e-3,
        batch_size=128, seed=seed, validate=on_validation(lora))
    level = [float(h[h > 0].mean()) for h in base_hidden]  # "strongly active": above the base's mean positive act.
    with torch.no_grad():
        lora_hidden = _hidden(lora.base_model.model, x_te)
    pre = _pre_activations(base, x_te) if gated.site == "pre" else [None, None]
    with torch.no_grad():
        att = [attributions(g, b, p) for g, b, p in zip(gated.gates, base_hidden, pre)]
    return DigitsResult(
        seed=seed,
        accuracy={"frozen (rotated)": float(base_right.float().mean()), "frozen (upright)": acc(base, up[sp.test], labels[sp.test]),
                  "gates smooth": smooth, "gates hard": hard, "LoRA": acc(lora)},
        parameters={"frozen": 0, "gates": sum(p.numel() for p in gated.gates.parameters()),
                    "LoRA": sum(p.numel() for p in lora.parameters() if p.requires_grad)},
        strongly_active={"frozen": _strong_share(base_hidden, level), "gates smooth": _strong_share(smooth_hidden, level),
                         "gates hard": _strong_share(hard_hidden, level), "LoRA": _strong_share(lora_hidden, level)},
        turned_off=sum(len(a["turned_off"]) for a in att),
        fixed=int((gates_right & ~base_right).sum()), broken=int((base_right & ~gates_right).sum()),
        test_images=len(y_te))


def main(argv: list[str] | None = None) -> int:
    """`python -m steering.dopamine_digits [--seeds N] [--hidden H] [--gate-site post|pre]`: one JSON line per seed."""
    import argparse
    import json

    p = argparse.ArgumentParser(description="The Dopamine digits experiment (frozen base vs gates vs LoRA), "
                                            "one JSON line per seed.")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--hidden", type=int, default=HIDDEN)
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--adapt-steps", type=int, default=300)
    p.add_argument("--gate-site", choices=SITES, default="post",
                   help="where the gates sit on the hidden units: after the ReLU (post, default) or before it (pre)")
    args = p.parse_args(argv)
    for seed in range(args.seeds):
        r = run(seed, hidden=args.hidden, pretrain_steps=args.pretrain_steps, adapt_steps=args.adapt_steps,
                gate_site=args.gate_site)
        print(json.dumps({"gate_site": args.gate_site, **r.to_json()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
