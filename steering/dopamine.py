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

import torch
from torch import nn

from interp.errors import InterpError


@dataclass
class GateSettings:
    """Training choices the paper leaves open (defaults: what the digits experiment uses)."""

    temperature: float = 1.0  # T at the start of training
    final_temperature: float = 0.05  # T at the end (geometric annealing); the hard gate is the T → 0 limit
    init_threshold: float = 0.0  # τ starts here: with ReLU units, 0 lets every active unit through
    init_gain: float = 1.0
    steps: int = 300
    lr: float = 0.05
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


def train_gates(forward, gates: list[UnitGates], x: torch.Tensor, y: torch.Tensor,
                settings: GateSettings = GateSettings()) -> list[float]:
    """Fit the gates (only they train) by cross-entropy on (x, y); `forward(x)` must run the frozen
    network through the gates. The temperature is annealed; returns the loss per step."""
    params = [p for g in gates for p in g.parameters()]
    opt = torch.optim.Adam(params, lr=settings.lr)
    rng = torch.Generator().manual_seed(settings.seed)
    losses = []
    for step in range(settings.steps):
        t = settings.temperature_at(step)
        for g in gates:
            g.temperature, g.hard = t, False
        idx = torch.randint(len(x), (settings.batch_size,), generator=rng)
        loss = nn.functional.cross_entropy(forward(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def attributions(gates: UnitGates, base: torch.Tensor) -> dict[str, list[int]]:
    """Which units the mode turns off (active in the base, closed by the gate) or keeps, on activations
    `base` [n, width] of the frozen network: a unit counts as on when it is active in most inputs."""
    active = (base > 0).float().mean(0) > 0.5
    open_ = gates.mask(base).float().mean(0) > 0.5
    return {"turned_off": (active & ~open_).nonzero().flatten().tolist(),
            "kept_on": (active & open_).nonzero().flatten().tolist(),
            "turned_on": (~active & open_).nonzero().flatten().tolist()}
