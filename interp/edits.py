"""Edits as data: what to change at a site, not a closure that changes it.

Every steering writer returns a list of these; `interp.edit(model, edits)`
applies them. An activation edit acts on a site's tensor `[batch, seq, width]`
(width = d_mlp for mlp.hook_*, d_model for residual sites, n_heads·d_head for
attn.hook_z) at the positions its rule selects:

- "all": every position;
- "prompt": positions of the prompt (everything outside `interp.generate`);
- "generated": positions produced by `interp.generate`.

At one site the kinds apply in a fixed order — Ablate, Scale, Gate, Clamp,
Add — and, within a kind, in list order. `LowRank` adds a low-rank weight
delta to a Linear module's output at run time (no weight is written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Union

import torch

from .errors import InterpError

Positions = Literal["all", "prompt", "generated"]
POSITIONS: tuple[str, ...] = ("all", "prompt", "generated")


class EditError(InterpError):
    """An edit that cannot apply: wrong shapes, unknown site or module, bad position rule."""


def _vec(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32)
    if t.dim() != 1:
        raise EditError(f"{name} must be a 1-d tensor, got shape {tuple(t.shape)}")
    return t


def _idx(x) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.long).reshape(-1)
    return t


def _check_positions(p: str) -> None:
    if p not in POSITIONS:
        raise EditError(f"positions must be one of {', '.join(POSITIONS)}, not {p!r}")


@dataclass(frozen=True, eq=False)
class Add:
    """h ← h + scale · vector  (vector [width])."""

    site: str
    vector: torch.Tensor
    scale: float = 1.0
    positions: Positions = "all"
    kind: ClassVar[str] = "add"

    def __post_init__(self):
        object.__setattr__(self, "vector", _vec(self.vector, "Add.vector"))
        _check_positions(self.positions)


@dataclass(frozen=True, eq=False)
class Clamp:
    """h[..., neurons] ← values  (a scalar or one value per neuron)."""

    site: str
    neurons: torch.Tensor
    values: torch.Tensor | float = 0.0
    positions: Positions = "all"
    kind: ClassVar[str] = "clamp"

    def __post_init__(self):
        n = _idx(self.neurons)
        v = torch.as_tensor(self.values, dtype=torch.float32).reshape(-1)
        if v.numel() == 1:
            v = v.expand(n.numel()).clone()
        if v.numel() != n.numel():
            raise EditError(f"Clamp: {n.numel()} neurons but {v.numel()} values")
        object.__setattr__(self, "neurons", n)
        object.__setattr__(self, "values", v)
        _check_positions(self.positions)


@dataclass(frozen=True, eq=False)
class Scale:
    """h[..., neurons] ← gains · h[..., neurons]."""

    site: str
    neurons: torch.Tensor
    gains: torch.Tensor | float = 1.0
    positions: Positions = "all"
    kind: ClassVar[str] = "scale"

    def __post_init__(self):
        n = _idx(self.neurons)
        g = torch.as_tensor(self.gains, dtype=torch.float32).reshape(-1)
        if g.numel() == 1:
            g = g.expand(n.numel()).clone()
        if g.numel() != n.numel():
            raise EditError(f"Scale: {n.numel()} neurons but {g.numel()} gains")
        object.__setattr__(self, "neurons", n)
        object.__setattr__(self, "gains", g)
        _check_positions(self.positions)


@dataclass(frozen=True, eq=False)
class Gate:
    """Per-unit gate (Dopamine): h ← g · σ((h − τ)/T) · h, or g · 1[h > τ] · h when hard.

    thresholds, gains: [width].
    """

    site: str
    thresholds: torch.Tensor
    gains: torch.Tensor
    temperature: float = 1.0
    hard: bool = False
    positions: Positions = "all"
    kind: ClassVar[str] = "gate"

    def __post_init__(self):
        t, g = _vec(self.thresholds, "Gate.thresholds"), _vec(self.gains, "Gate.gains")
        if t.shape != g.shape:
            raise EditError(f"Gate: thresholds {tuple(t.shape)} and gains {tuple(g.shape)} differ")
        if self.temperature <= 0:
            raise EditError("Gate: temperature must be > 0")
        object.__setattr__(self, "thresholds", t)
        object.__setattr__(self, "gains", g)
        _check_positions(self.positions)


@dataclass(frozen=True, eq=False)
class Ablate:
    """Project out directions: h ← h − s · m ⊙ ((h Q) Qᵀ), Q an orthonormal basis of `directions` [r, width].

    strength s (1: remove the component; between 0 and 1: shrink it; above 1: reverse it);
    units: the indices m where it acts (None: every unit) — e.g. FOXP2's compensating
    shift on one language's neurons only.
    """

    site: str
    directions: torch.Tensor
    positions: Positions = "all"
    strength: float = 1.0
    units: torch.Tensor | None = None
    kind: ClassVar[str] = "ablate"
    basis: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        d = torch.as_tensor(self.directions, dtype=torch.float32)
        d = d.unsqueeze(0) if d.dim() == 1 else d
        if d.dim() != 2 or d.shape[0] == 0:
            raise EditError(f"Ablate.directions must be [r, width], got {tuple(d.shape)}")
        q, r = torch.linalg.qr(d.double().T)  # [width, r]
        if (r.diagonal().abs() < 1e-10).any():
            raise EditError("Ablate: directions are linearly dependent (or zero)")
        object.__setattr__(self, "directions", d)
        object.__setattr__(self, "basis", q.float())
        object.__setattr__(self, "strength", float(self.strength))
        if self.units is not None:
            units = _idx(self.units)
            if units.numel() == 0:
                raise EditError("Ablate.units is empty; use None for every unit")
            object.__setattr__(self, "units", units)
        _check_positions(self.positions)

    def weight(self, width: int) -> torch.Tensor:
        """s · m as a dense [width] vector."""
        if self.units is None:
            return torch.full((width,), self.strength)
        w = torch.zeros(width)
        w[self.units] = self.strength
        return w


@dataclass(frozen=True, eq=False)
class LowRank:
    """Run-time weight delta on a Linear module: W ← W + A B, on `rows` or `cols` only.

    A [out, r], B [r, in]. `module` is an HF module name ("model.layers.3.mlp.up_proj")
    or a block path ("blocks.3.mlp.up_proj"). rows: output features that change
    (ΔW[rows, :]); cols: input features that change (ΔW[:, cols]); neither: all.
    """

    module: str
    A: torch.Tensor
    B: torch.Tensor
    rows: torch.Tensor | None = None
    cols: torch.Tensor | None = None
    kind: ClassVar[str] = "lowrank"
    positions: Positions = "all"

    def __post_init__(self):
        a, b = torch.as_tensor(self.A, dtype=torch.float32), torch.as_tensor(self.B, dtype=torch.float32)
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
            raise EditError(f"LowRank: A [out, r] and B [r, in] do not fit: {tuple(a.shape)}, {tuple(b.shape)}")
        if self.rows is not None and self.cols is not None:
            raise EditError("LowRank: give rows or cols, not both")
        object.__setattr__(self, "A", a)
        object.__setattr__(self, "B", b)
        if self.rows is not None:
            object.__setattr__(self, "rows", _idx(self.rows))
        if self.cols is not None:
            object.__setattr__(self, "cols", _idx(self.cols))
        _check_positions(self.positions)

    @property
    def site(self) -> str:  # edits are grouped by where they act
        return self.module

    def delta(self) -> torch.Tensor:
        """The dense ΔW [out, in] this edit stands for (for checks and reference paths)."""
        d = self.A @ self.B
        if self.rows is not None:
            mask = torch.zeros(d.shape[0], 1)
            mask[self.rows] = 1
            d = d * mask
        if self.cols is not None:
            mask = torch.zeros(1, d.shape[1])
            mask[0, self.cols] = 1
            d = d * mask
        return d


Edit = Union[Add, Clamp, Scale, Gate, Ablate, LowRank]
ACTIVATION_KINDS: tuple[str, ...] = ("ablate", "scale", "gate", "clamp", "add")  # order at a site
EDIT_TYPES: dict[str, type] = {t.kind: t for t in (Add, Clamp, Scale, Gate, Ablate, LowRank)}
