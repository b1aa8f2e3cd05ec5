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

Every edit has one JSON form (`edit_to_json`, `edit_from_json`, checked
against `EDIT_SCHEMA`): the kind, its scalar fields, and its tensors as
(nested) lists of numbers. Recipes store the same form, with the tensors moved
into the safetensors body. `with_strength(edit, s)` scales an edit's effect
(Add's scale, a clamp's pull toward its values, …) for steering per request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, Union

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


def _finite(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise EditError(f"{name} must be a number, not {x!r}") from None
    if not math.isfinite(v):
        raise EditError(f"{name} must be finite, not {v}")
    return v


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
        object.__setattr__(self, "scale", _finite(self.scale, "Add.scale"))
        _check_positions(self.positions)


@dataclass(frozen=True, eq=False)
class Clamp:
    """h[..., neurons] ← values  (a scalar or one value per neuron).

    strength s pulls part way: h ← h + s · (values − h) on those neurons (1: the clamp itself).
    """

    site: str
    neurons: torch.Tensor
    values: torch.Tensor | float = 0.0
    positions: Positions = "all"
    strength: float = 1.0
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
        object.__setattr__(self, "strength", _finite(self.strength, "Clamp.strength"))
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

    thresholds, gains: [width]. strength s mixes: h ← h + s · (gated − h) (1: the gate itself).
    """

    site: str
    thresholds: torch.Tensor
    gains: torch.Tensor
    temperature: float = 1.0
    hard: bool = False
    positions: Positions = "all"
    strength: float = 1.0
    kind: ClassVar[str] = "gate"

    def __post_init__(self):
        t, g = _vec(self.thresholds, "Gate.thresholds"), _vec(self.gains, "Gate.gains")
        if t.shape != g.shape:
            raise EditError(f"Gate: thresholds {tuple(t.shape)} and gains {tuple(g.shape)} differ")
        if self.temperature <= 0:
            raise EditError("Gate: temperature must be > 0")
        object.__setattr__(self, "thresholds", t)
        object.__setattr__(self, "gains", g)
        object.__setattr__(self, "strength", _finite(self.strength, "Gate.strength"))
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
        object.__setattr__(self, "strength", _finite(self.strength, "Ablate.strength"))
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

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out + ΔW x for the module's input x [..., in] and output out [..., out], without forming ΔW."""
        A, B = self.A.to(x), self.B.to(x)
        if self.cols is not None:
            c = self.cols.to(x.device)
            return out + (x[..., c] @ B[:, c].T) @ A.T
        if self.rows is not None:
            r = self.rows.to(x.device)
            return out.index_add(-1, r, (x @ B.T) @ A[r].T)
        return out + (x @ B.T) @ A.T

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


# ---------------------------------------------------------------- strength
def with_strength(e: Edit, s: float) -> Edit:
    """The edit with its effect scaled by s, as its kind defines strength.

    Add: scale · s; Scale: gains 1 + s · (g − 1); Clamp, Gate, Ablate: strength · s
    (a clamp pulls its neurons part way toward its values); LowRank: A · s. s = 1 returns e.
    """
    s = _finite(s, "strength")
    if s == 1.0:
        return e
    if e.kind == "add":
        return replace(e, scale=e.scale * s)
    if e.kind == "scale":
        return replace(e, gains=1.0 + s * (e.gains - 1.0))
    if e.kind in ("clamp", "gate", "ablate"):
        return replace(e, strength=e.strength * s)
    if e.kind == "lowrank":
        return replace(e, A=e.A * s)
    raise EditError(f"no strength for an edit of kind {e.kind!r}")


# ---------------------------------------------------------------- the JSON form
TENSOR_FIELDS: dict[str, tuple[str, ...]] = {
    "add": ("vector",), "clamp": ("neurons", "values"), "scale": ("neurons", "gains"),
    "gate": ("thresholds", "gains"), "ablate": ("directions", "units"), "lowrank": ("A", "B", "rows", "cols")}
SCALAR_FIELDS: dict[str, tuple[str, ...]] = {
    "add": ("site", "scale", "positions"), "clamp": ("site", "positions", "strength"),
    "scale": ("site", "positions"), "gate": ("site", "temperature", "hard", "positions", "strength"),
    "ablate": ("site", "positions", "strength"), "lowrank": ("module", "positions")}
_INTEGER_FIELDS = {"neurons", "units", "rows", "cols"}

_num = {"type": "number"}
_vector = {"type": "array", "items": _num, "minItems": 1}
_matrix = {"type": "array", "items": _vector, "minItems": 1}
_indices = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_positions = {"enum": list(POSITIONS)}


def _kind_schema(kind: str, required: list[str], props: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["kind", *required],
            "properties": {"kind": {"const": kind}, "positions": _positions, **props}}


EDIT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "interp edit",
    "description": "One edit of interp.edits in its JSON form; tensors are (nested) lists of numbers.",
    "oneOf": [
        _kind_schema("add", ["site", "vector"], {"site": {"type": "string"}, "vector": _vector, "scale": _num}),
        _kind_schema("clamp", ["site", "neurons"], {"site": {"type": "string"}, "neurons": _indices,
                                                    "values": {"oneOf": [_num, _vector]}, "strength": _num}),
        _kind_schema("scale", ["site", "neurons"], {"site": {"type": "string"}, "neurons": _indices,
                                                    "gains": {"oneOf": [_num, _vector]}}),
        _kind_schema("gate", ["site", "thresholds", "gains"], {
            "site": {"type": "string"}, "thresholds": _vector, "gains": _vector,
            "temperature": {"type": "number", "exclusiveMinimum": 0}, "hard": {"type": "boolean"}, "strength": _num}),
        _kind_schema("ablate", ["site", "directions"], {
            "site": {"type": "string"}, "directions": {"oneOf": [_vector, _matrix]},
            "units": {"oneOf": [_indices, {"type": "null"}]}, "strength": _num}),
        _kind_schema("lowrank", ["module", "A", "B"], {
            "module": {"type": "string"}, "A": _matrix, "B": _matrix,
            "rows": {"oneOf": [_indices, {"type": "null"}]}, "cols": {"oneOf": [_indices, {"type": "null"}]}}),
    ],
}


def edit_to_json(e: Edit, *, tensors: bool = True) -> dict[str, Any]:
    """The JSON form of an edit; tensors=False leaves the tensor fields out (recipes keep them as safetensors)."""
    out: dict[str, Any] = {"kind": e.kind, **{f: getattr(e, f) for f in SCALAR_FIELDS[e.kind]}}
    if tensors:
        for f in TENSOR_FIELDS[e.kind]:
            value = getattr(e, f)
            if value is not None:
                out[f] = value.tolist()
    return out


def edit_from_fields(kind: str, fields: dict[str, Any]) -> Edit:
    """Build an edit of `kind` from its fields (tensors as tensors or lists); EditError names what is wrong."""
    if kind not in EDIT_TYPES:
        raise EditError(f"unknown edit kind {kind!r}; kinds: {', '.join(EDIT_TYPES)}")
    known = set(SCALAR_FIELDS[kind]) | set(TENSOR_FIELDS[kind])
    extra = sorted(set(fields) - known)
    if extra:
        raise EditError(f"{kind} edit: unknown field {extra[0]!r}; fields: {', '.join(sorted(known))}")
    try:
        return EDIT_TYPES[kind](**fields)
    except TypeError as exc:  # a missing required field
        raise EditError(f"{kind} edit: {exc}") from None
    except (ValueError, RuntimeError) as exc:  # tensors that cannot be built (ragged lists, …)
        raise EditError(f"{kind} edit: malformed field ({exc})") from None


def edit_from_json(obj: Any) -> Edit:
    """An edit from its JSON form, checked against EDIT_SCHEMA first (the error names the field)."""
    import jsonschema

    if not isinstance(obj, dict) or obj.get("kind") not in EDIT_TYPES:
        kind = obj.get("kind") if isinstance(obj, dict) else None
        raise EditError(f"an edit must be an object whose 'kind' is one of {', '.join(EDIT_TYPES)}, not {kind!r}")
    schema = next(s for s in EDIT_SCHEMA["oneOf"] if s["properties"]["kind"]["const"] == obj["kind"])
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(obj))
    if err is not None:
        where = ".".join(str(p) for p in err.absolute_path)
        if not where and err.validator in ("required", "additionalProperties") and "'" in err.message:
            where = err.message.split("'")[1]  # the property missing, or the one not allowed
        raise EditError(f"{obj['kind']} edit, field {where or 'edit'}: {err.message[:200]}")
    fields = {k: v for k, v in obj.items() if k != "kind"}
    for f in TENSOR_FIELDS[obj["kind"]]:
        if isinstance(fields.get(f), list):
            fields[f] = torch.tensor(fields[f], dtype=torch.long if f in _INTEGER_FIELDS else torch.float32)
    return edit_from_fields(obj["kind"], fields)


def pack_edit_sets(sets: dict[str, list]) -> bytes:
    """Named edit sets as one safetensors blob (JSON forms in the header, tensors in the body): how the
    vLLM engine ships recipes to its workers without pickling, and what a set's digest is taken over."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    header: dict[str, list] = {}
    for name, edits in sets.items():
        header[name] = []
        for i, e in enumerate(edits):
            header[name].append(edit_to_json(e, tensors=False))
            for f in TENSOR_FIELDS[e.kind]:
                value = getattr(e, f)
                if value is not None:
                    tensors[f"{name}/{i}/{f}"] = value.detach().cpu().clone()  # sets may share tensors
    return save(tensors, metadata={"interp_edit_sets": json.dumps(header, sort_keys=True)})


def unpack_edit_sets(blob: bytes) -> dict[str, list]:
    """The inverse of `pack_edit_sets`; EditError on a malformed blob."""
    from safetensors.torch import load

    try:
        tensors = load(blob)
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(json.loads(blob[8:8 + size])["__metadata__"]["interp_edit_sets"])
    except Exception as exc:  # safetensors and json raise several types for bad bytes
        raise EditError(f"not a packed set of edits ({type(exc).__name__})") from None
    out = {}
    for name, entries in header.items():
        out[name] = []
        for i, entry in enumerate(entries):
            kind = entry.get("kind")
            fields = {k: v for k, v in entry.items() if k != "kind"}
            fields.update({f: tensors[f"{name}/{i}/{f}"] for f in TENSOR_FIELDS.get(kind, ())
                           if f"{name}/{i}/{f}" in tensors})
            out[name].append(edit_from_fields(kind, fields))
    return out


def edits_digest(edits: list) -> str:
    """sha256 of an edit set's packed form: equal for equal edits (kinds, fields, tensor bytes)."""
    import hashlib

    return hashlib.sha256(pack_edit_sets({"": list(edits)})).hexdigest()
