"""Dopamine gates on a language model's MLP neurons (METHODS.md §H, issue 11 part 3).

The base model stays frozen; a τ and a g per MLP neuron at `blocks.L.mlp.hook_post` (the
input of down_proj: [batch, seq, d_mlp]) are trained for a *mode* — here, continuing English
text in another language — by next-token loss on the completions of (prompt, completion)
examples. The trained gates are hardened into `interp.Gate` edits, so they are applied,
saved as a recipe and compared through the edit engine like every other writer.

Choices the paper leaves open, made for SwiGLU neurons (whose activations are signed, half of
them negative): τ starts per neuron at the lowest activation seen on the training prompts, so
the hard gate starts as the identity, and T is relative to each site's activation standard
deviation, so one schedule fits layers whose scales differ by 30×.

The comparison at a matched budget (same examples, steps and batch): LoRA of rank r on the
same layers' down_proj (the `peft` library), exported as `interp.LowRank` edits.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

import interp
from interp.hooks import hooks, site_hook
from interp.errors import InterpError

from .dopamine import GateSettings, UnitGates


@dataclass
class ModeExample:
    """One training example of a mode: the loss is on `completion` given `prompt`."""

    prompt: str
    completion: str


@dataclass
class LmGateSettings:
    """What trains the gates of a language model (the `GateSettings` temperature schedule included)."""

    layers: list[int] | None = None  # None: every layer
    site: str = "mlp.hook_post"
    steps: int = 80
    batch_size: int = 8
    lr: float = 0.02
    temperature: float = 1.0  # × each site's activation std
    final_temperature: float = 0.05
    max_length: int = 64  # tokens per example (prompt + completion)
    seed: int = 0
    lora_rank: int = 4  # the LoRA baseline
    lora_lr: float = 1e-3

    def schedule(self) -> GateSettings:
        return GateSettings(temperature=self.temperature, final_temperature=self.final_temperature,
                            steps=self.steps, lr=self.lr, batch_size=self.batch_size, seed=self.seed)


def read_mode(path: str | Path) -> list[ModeExample]:
    """MODE.jsonl: one {"prompt": ..., "completion": ...} per line ({"text": ...} means an empty prompt)."""
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"mode file {path} does not exist")
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InterpError(f"{path} is not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise InterpError(f"{path}:{n}: not a JSON object") from None
        if not isinstance(row, dict):
            raise InterpError(f"{path}:{n}: not a JSON object")
        prompt, completion = row.get("prompt", ""), row.get("completion", row.get("text"))
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
            raise InterpError(f'{path}:{n}: needs a non-empty string "completion" (or "text"), and "prompt" a string')
        out.append(ModeExample(prompt, completion))
    if not out:
        raise InterpError(f"{path} holds no examples")
    return out


def write_mode(path: str | Path, examples: Sequence[ModeExample]) -> Path:
    """Write examples as MODE.jsonl (atomically)."""
    from interp.cache import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(vars(e), ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    return path


def code_switch_examples(target: str, n: int = 256, *, offset: int = 1000) -> list[ModeExample]:
    """The "continue in `target`" mode from the parallel Bible: the first half of an English verse,
    then the second half of its translation. Verses from `offset` on (FOXP2 and the language-neuron
    analyses use the first few hundred); the evaluation's neutral prompts are not Bible text."""
    from interp.corpora import bible_parallel

    par = bible_parallel(["en", target], limit=offset + n)
    out = []
    for en, tg in zip(par["en"][offset:], par[target][offset:]):
        e, t = en.text.split(), tg.text.split()
        if len(e) < 4 or len(t) < 4:
            continue
        out.append(ModeExample(" ".join(e[: len(e) // 2]), " " + " ".join(t[len(t) // 2:])))
    if not out:
        raise InterpError(f"no parallel verses for {target!r} after verse {offset}")
    return out


def _encode(model: interp.Model, examples: Sequence[ModeExample], max_length: int):
    """input_ids, attention_mask [n, seq] (right-padded) and labels [n, seq] (−100 off the completion)."""
    tok = model.tokenizer
    rows = []
    for e in examples:
        p = tok(e.prompt)["input_ids"] if e.prompt else []
        c = tok(e.completion, add_special_tokens=False)["input_ids"]
        ids = (p + c)[:max_length]
        labels = ([-100] * len(p) + c)[:max_length]
        if any(x != -100 for x in labels[1:]):
            rows.append((ids, labels))
    if not rows:
        raise InterpError(f"no example keeps a completion token within {max_length} tokens")
    seq = max(len(i) for i, _ in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([i + [pad] * (seq - len(i)) for i, _ in rows])
    mask = torch.tensor([[1] * len(i) + [0] * (seq - len(i)) for i, _ in rows])
    labels = torch.tensor([lab + [-100] * (seq - len(lab)) for _, lab in rows])
    return ids, mask, labels


def _lm_loss(hf: nn.Module, ids, mask, labels) -> torch.Tensor:
    """Mean next-token cross-entropy on the labelled (completion) tokens."""
    logits = hf(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten().to(logits.device))


@dataclass
class LmGates:
    """Trained gates per site ([d_mlp] τ and g each) and the loss per step."""

    gates: dict[str, UnitGates]
    losses: list[float] = field(default_factory=list)

    def edits(self) -> list[interp.Gate]:
        """The hardened gates as engine edits."""
        return [g.to_edit(site) for site, g in self.gates.items()]

    @property
    def parameters(self) -> int:
        return sum(p.numel() for g in self.gates.values() for p in g.parameters())


def _sites(model: interp.Model, s: LmGateSettings) -> list[str]:
    layers = s.layers if s.layers is not None else range(model.adapter.n_layers)
    return [f"blocks.{l}.{s.site}" for l in layers]


@torch.no_grad()
def _calibrate(model: interp.Model, sites: list[str], ids, mask) -> dict[str, tuple[torch.Tensor, float]]:
    """Per site: each unit's lowest activation on real tokens [width] and the site's activation std,
    accumulated batch by batch (nothing the size of the activations is kept)."""
    low: dict[str, torch.Tensor] = {}
    sums: dict[str, torch.Tensor] = {s: torch.zeros(3, dtype=torch.float64) for s in sites}  # n, Σx, Σx²
    real = {"mask": mask}

    def seen(site: str, x: torch.Tensor) -> None:
        a = x[real["mask"].to(x.device).bool()].float()  # [tokens, width]
        m = a.min(0).values.cpu()
        low[site] = m if site not in low else torch.minimum(low[site], m)
        sums[site] += torch.tensor([a.numel(), float(a.sum()), float((a * a).sum())], dtype=torch.float64)

    regs = [(lambda s=s: site_hook(model.adapter.resolve(s), lambda x, s=s: seen(s, x))) for s in sites]
    with hooks(regs):
        for i in range(0, len(ids), 16):
            real["mask"] = mask[i:i + 16]
            model.hf(input_ids=ids[i:i + 16].to(model.device), attention_mask=mask[i:i + 16].to(model.device),
                     use_cache=False)
    out = {}
    for s in sites:
        n, total, squares = sums[s].tolist()
        out[s] = (low[s], float(max(squares / n - (total / n) ** 2, 0.0) ** 0.5))
    return out


def train_lm_gates(model: interp.Model, examples: Sequence[ModeExample],
                   settings: LmGateSettings = LmGateSettings(), *, progress: bool = False) -> LmGates:
    """Train τ, g per neuron at the chosen sites (all base weights frozen, and left as they were)."""
    sites = _sites(model, settings)
    ids, mask, labels = _encode(model, examples, settings.max_length)
    calib = _calibrate(model, sites, ids[:64], mask[:64])  # 64 examples show each unit's range
    sched = settings.schedule()
    gates: dict[str, UnitGates] = {}
    scales: dict[str, float] = {}
    for s in sites:
        low, std = calib[s]
        g = UnitGates(len(low), sched)
        with torch.no_grad():
            g.threshold.copy_(low - 1e-3)  # the hard gate starts as the identity
        gates[s], scales[s] = g.to(model.device), std
    params = [p for g in gates.values() for p in g.parameters()]
    opt = torch.optim.Adam(params, lr=settings.lr)
    rng = torch.Generator().manual_seed(settings.seed)
    regs = [(lambda s=s: site_hook(model.adapter.resolve(s), lambda x, s=s: gates[s](x.float()).to(x.dtype)))
            for s in sites]
    result = LmGates(gates)
    grads = {p: p.requires_grad for p in model.hf.parameters()}
    model.hf.requires_grad_(False)
    was_training = model.hf.training
    model.hf.eval()
    try:
        from tqdm.auto import trange

        with hooks(regs):
            for step in trange(settings.steps, disable=not progress, desc="gates"):
                t = sched.temperature_at(step)
                for s, g in gates.items():
                    g.temperature, g.hard = t * scales[s], False
                idx = torch.randint(len(ids), (min(settings.batch_size, len(ids)),), generator=rng)
                loss = _lm_loss(model.hf, ids[idx].to(model.device), mask[idx].to(model.device), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                result.losses.append(float(loss.detach()))
    finally:
        for p, flag in grads.items():
            p.requires_grad_(flag)
        model.hf.train(was_training)
    for g in gates.values():
        g.hard = True
        g.requires_grad_(False)
    return result


def train_lm_lora(model: interp.Model, examples: Sequence[ModeExample],
                  settings: LmGateSettings = LmGateSettings()) -> tuple[list[interp.LowRank], int]:
    """The LoRA baseline at the gates' budget: rank-r LoRA (peft) on the same layers' down_proj,
    trained on a copy of the model; returns its deltas as `interp.LowRank` edits and its parameter count."""
    from peft import LoraConfig, get_peft_model

    layers = settings.layers if settings.layers is not None else list(range(model.adapter.n_layers))
    down = model.adapter.family.down
    names = {n for n, _ in model.hf.named_modules()}
    targets = [n for n in names if n.endswith(f".{down}") and _layer_of(n) in layers]
    r = settings.lora_rank
    torch.manual_seed(settings.seed)
    peft_model = get_peft_model(copy.deepcopy(model.hf), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets,
                                                                    lora_dropout=0.0))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=settings.lora_lr)
    ids, mask, labels = _encode(model, examples, settings.max_length)
    rng = torch.Generator().manual_seed(settings.seed)
    peft_model.eval()
    for _ in range(settings.steps):
        idx = torch.randint(len(ids), (min(settings.batch_size, len(ids)),), generator=rng)
        loss = _lm_loss(peft_model, ids[idx].to(model.device), mask[idx].to(model.device), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    edits = []
    for name, mod in peft_model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            scale = mod.scaling["default"]
            A = (mod.lora_B["default"].weight * scale).detach().cpu()
            B = mod.lora_A["default"].weight.detach().cpu()
            edits.append(interp.LowRank(f"blocks.{_layer_of(name)}.mlp.{down}", A, B))
    return edits, sum(p.numel() for p in trainable)


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a == "layers" and b.isdigit():
            return int(b)
    return None
