"""Dopamine gates (Ghasemlou 2026; METHODS.md §H): adapt a frozen network by a change of mode.

Every base weight stays frozen. At each gated site, each unit i gets a threshold τ_i and a gain
g_i (2 × width parameters):

    training:   y_i = g_i · σ((a_i − τ_i) / T) · a_i        (smooth; T annealed from T0 to T1)
    inference:  y_i = g_i · 1[a_i > τ_i] · a_i              (hard: an explicit on/off mask)

The paper leaves open where the gate sits, T and its annealing, and the widths: they are
`GateSettings` fields. Trained gates become `interp.Gate` edits (a recipe) for models the edit
engine steers, and `attributions` lists which units the mode turns on or off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from interp.errors import InterpError


@dataclass
class GateSettings:
    """Training choices the paper leaves open (defaults: what the digits experiment uses)."""

    temperature: float = 0.25  # T at the start of training (in the units of the activations)
    final_temperature: float = 0.02  # T at the end (geometric annealing); the hard gate is the T → 0 limit
    init_threshold: float = 0.0  # τ starts here: with ReLU units the hard gate starts as the identity, and the
    #                              smooth one passes every activation above ~3T0 (a τ far below, e.g. −3, leaves
    #                              σ' ≈ 0 there: τ then never moves and the gates learn gains only — measured)
    init_gain: float = 1.0
    site: str = "post"  # where a gate sits on an MLP unit (the paper does not say): "post" gates the activation
    #                     act(z), "pre" the pre-activation z before act (used by the digits MLP; the language model
    #                     names its sites in `LmGateSettings.site`)
    steps: int = 300
    lr: float = 0.02
    batch_size: int = 128
    seed: int = 0

    def temperature_at(self, step: int) -> float:
        if self.steps <= 1:
            return self.final_temperature
        frac = step / (self.steps - 1)
        return float(math.exp((1 - frac) * math.log(self.temperature) + frac * math.log(self.final_temperature)))


class UnitGates(nn.Module):
    """τ and g for one site of `width` units; `forward(a)` gates activations [..., width]."""

    def __init__(self, width: int, settings: GateSettings = GateSettings()) -> None:
        super().__init__()
        if width < 1:
            raise InterpError("a gate needs at least one unit")
        self.threshold = nn.Parameter(torch.full((width,), float(settings.init_threshold)))
        self.gain = nn.Parameter(torch.full((width,), float(settings.init_gain)))
        self.temperature = settings.temperature
        self.hard = False

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.hard:
            return self.gain * (a > self.threshold).to(a.dtype) * a
        return self.gain * torch.sigmoid((a - self.threshold) / self.temperature) * a

    def mask(self, a: torch.Tensor) -> torch.Tensor:
        """[..., width] bool: the hard gate's on/off decision for activations a."""
        return a > self.threshold

    def to_edit(self, site: str):
        """The hard gate as an `interp.Gate` edit at `site` (for models the edit engine steers)."""
        import interp

        return interp.Gate(site, self.threshold.detach().clone(), self.gain.detach().clone(),
                           temperature=self.temperature, hard=True)


def fit(forward, params, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, batch_size: int, seed: int,
        validate=None, every: int = 25, before_step=None, before_validate=None) -> list[float]:
    """Adam on the cross-entropy of `forward(x[batch])` over seeded random batches of (x, y), updating only
    `params`; returns the loss per step. `before_step(step)` runs before each step.

    With `validate` (a function of no arguments → score, higher is better, a number or a tuple
    compared in order; `before_validate()` runs first), the parameters are scored every `every`
    steps and after the last, and the best are kept (the earliest of equals) — early stopping on
    held-out data. Step 0 (the untrained parameters) is never a candidate.
    """
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr)
    rng = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    best: tuple[Any, list[torch.Tensor]] | None = None
    for step in range(steps):
        if before_step is not None:
            before_step(step)
        idx = torch.randint(len(x), (batch_size,), generator=rng)
        loss = nn.functional.cross_entropy(forward(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if validate is not None and ((step + 1) % every == 0 or step + 1 == steps):
            if before_validate is not None:
                before_validate()
            with torch.no_grad():
                score = validate()
            if best is None or score > best[0]:
                best = (score, [p.detach().clone() for p in params])
    if best is not None:
        with torch.no_grad():
            for p, v in zip(params, best[1]):
                p.copy_(v)
    return losses


def train_gates(forward, gates: list[UnitGates], x: torch.Tensor, y: torch.Tensor,
                settings: GateSettings = GateSettings(), *, validate=None, every: int = 25) -> list[float]:
    """Fit the gates (only they train) by cross-entropy on (x, y); `forward(x)` must run the frozen
    network through the gates. The smooth gates' temperature is annealed; returns the loss per step.
    With `validate`, early stopping as in `fit`, scoring the gates hardened."""

    def anneal(step: int) -> None:
        for g in gates:
            g.temperature, g.hard = settings.temperature_at(step), False

    def harden() -> None:
        for g in gates:
            g.hard = True

    return fit(forward, [p for g in gates for p in g.parameters()], x, y, steps=settings.steps, lr=settings.lr,
               batch_size=settings.batch_size, seed=settings.seed, validate=validate, every=every,
               before_step=anneal, before_validate=harden)


def attributions(gates: UnitGates, base: torch.Tensor, pre: torch.Tensor | None = None) -> dict[str, list[int]]:
    """Which units the mode turns off or keeps, on activations `base` [n, width] of the frozen network.

    A unit fires on an input when its activation is nonzero; the hard gate passes it when it fires
    and clears the threshold (on `pre`, the pre-activations [n, width], for gates at the "pre" site).
    turned_off: fires on most inputs in the base, passed on fewer than half; kept_on: fires and is
    passed on most. (A gate cannot turn on a unit the base leaves at 0.)
    """
    fires = base != 0
    usual = fires.float().mean(0) > 0.5
    passed = (gates.mask(base if pre is None else pre) & fires).float().mean(0) > 0.5
    return {"turned_off": (usual & ~passed).nonzero().flatten().tolist(),
            "kept_on": (usual & passed).nonzero().flatten().tolist()}


def attribution_png(sites: dict[str, tuple[UnitGates, torch.Tensor]]) -> bytes:
    """One panel per site {name: (gates, base activations [n, width])}: each unit's firing rate in the
    frozen network (x) against the rate at which the hard gate passes it (y). Units on the diagonal are
    kept; units the mode turns off fall below it."""
    from interp.plotting import png, subplots

    fig, axes = subplots(ncols=len(sites), figsize=(3.2 * len(sites), 3.2), squeeze=False)
    for ax, (name, (gates, base)) in zip(axes[0], sites.items()):
        fires = base != 0
        x = fires.float().mean(0)
        y = (gates.mask(base) & fires).float().mean(0)
        off = set(attributions(gates, base)["turned_off"])
        colors = ["tab:red" if i in off else "tab:blue" for i in range(len(x))]
        ax.scatter(x.numpy(), y.numpy(), s=8, c=colors)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(title=f"{name}: {len(off)} off", xlabel="fires (frozen)", ylabel="passed (gated)", xlim=(-0.02, 1.02),
               ylim=(-0.02, 1.02))
    return png(fig)
