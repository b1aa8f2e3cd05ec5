"""Recipes: an edit set on disk, as one safetensors file with a JSON header.

The header (safetensors metadata key "interp_recipe") records the format
version, the model it was made for (id, family and shape), every edit's kind,
site and parameters, and free-form provenance (which writer, which data).
Tensors are stored under `e{i}.{field}`. Loading refuses a recipe whose
model shape does not match (or, with `strict=True`, whose model id differs),
saying what differs. The header holds `file_sha256`, the sha256 of the whole file's
bytes (`interp.integrity`: written as zeros, hashed, then filled in), and a sha256 of
the tensors, so a change to any byte is refused rather than applied with altered
values or provenance. Recipes of version 1 (tensors checksummed, header not) are refused
with a request to save them again. Never pickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from .cache import atomic_path
from .edits import TENSOR_FIELDS, EditError, edit_from_fields, edit_to_json
from .errors import InterpError
from .integrity import PLACEHOLDER, is_sealed, seal
from .models import Model

FORMAT = "interp-recipe"
VERSION = 2  # 2: file_sha256 covers every byte (1: only the tensors were checksummed)


class RecipeError(InterpError):
    """A recipe file that is unreadable, malformed, or made for an incompatible model."""


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_signature(model: Model) -> dict[str, Any]:
    a = model.adapter
    return {"id": model.name, "family": a.family.name, "n_layers": a.n_layers, "d_model": a.d_model,
            "d_mlp": a.d_mlp, "vocab": int(a.unembed().shape[0])}


def save_recipe(path: str | Path, edits: Sequence, model: Model, provenance: dict | None = None) -> Path:
    """Write `edits` (made for `model`) to `path` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for i, e in enumerate(edits):
        if e.kind not in TENSOR_FIELDS:
            raise EditError(f"cannot save an edit of kind {e.kind!r}")
        entry = edit_to_json(e, tensors=False)  # the JSON form of interp.edits, tensors in the body
        for f in TENSOR_FIELDS[e.kind]:
            value = getattr(e, f)
            if value is not None:
                tensors[f"e{i}.{f}"] = value.detach().cpu().contiguous()
        entries.append(entry)
    import interp

    header = {"file_sha256": PLACEHOLDER,  # first in the file: the seal goes over the first run of 64 zeros
              "format": FORMAT, "version": VERSION, "model": model_signature(model), "edits": entries,
              "sha256": _digest(tensors),
              "provenance": provenance or {}, "library": {"interp": interp.__version__, "torch": torch.__version__}}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"interp_recipe": json.dumps(header)})
        tmp.write_bytes(seal(tmp.read_bytes()))
    return path


def read_recipe(path: str | Path) -> tuple[dict, list]:
    """(header, edits) of a recipe file, without checking it against a model."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    raw = path.read_bytes()
    try:
        tensors = load_tensors(raw)
        meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")]).get("__metadata__") or {}
    except Exception as exc:  # safetensors raises several types for a bad file
        raise RecipeError(f"{path} is not a safetensors recipe ({type(exc).__name__})") from None
    try:
        header = json.loads(meta["interp_recipe"])
    except (KeyError, ValueError, TypeError):
        raise RecipeError(f"{path} has no interp recipe header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("version"), int):
        raise RecipeError(f"{path}: not an {FORMAT} header")
    if "file_sha256" not in header and header["version"] < 2:
        raise RecipeError(f"{path} is a version {header['version']} recipe, whose header has no checksum; "
                          f"save it again with this interp (run the command that wrote it)")
    if not is_sealed(raw, header.get("file_sha256")):
        raise RecipeError(f"{path} is corrupted: its bytes do not match the checksum in its header")
    if header["version"] > VERSION:
        raise RecipeError(f"{path}: recipe version {header['version']} is newer than this interp reads ({VERSION})")
    if header.get("sha256") != _digest(tensors):
        raise RecipeError(f"{path} is corrupted: its tensors do not match the checksum in its header")
    if not isinstance(header.get("model"), dict) or not isinstance(header.get("edits"), list):
        raise RecipeError(f"{path}: malformed recipe header (no model or edits)")
    edits = []
    for i, entry in enumerate(header["edits"]):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in TENSOR_FIELDS:
            raise RecipeError(f"{path}: unknown edit kind {kind!r}")
        fields = {k: v for k, v in entry.items() if k != "kind"}
        fields.update({f: tensors[f"e{i}.{f}"] for f in TENSOR_FIELDS[kind] if f"e{i}.{f}" in tensors})
        try:
            edits.append(edit_from_fields(kind, fields))
        except EditError as exc:
            raise RecipeError(f"{path}: edit {i} is malformed ({exc})") from None
    return header, edits


def load_recipe(path: str | Path, model: Model, *, strict: bool = False) -> list:
    """The recipe's edits, after checking it fits `model` (shape; and id when `strict`)."""
    header, edits = read_recipe(path)
    check_fits(header, model, Path(path).name, strict=strict)
    return edits


def check_fits(header: dict, model: Model, name: str, *, strict: bool = False) -> None:
    """RecipeError unless the recipe with `header` (from `read_recipe`) was made for a model of
    `model`'s shape (and, when `strict`, for that very model)."""
    made, here = header["model"], model_signature(model)
    keys = ("family", "n_layers", "d_model", "d_mlp", "vocab") + (("id",) if strict else ())
    diff = [f"{k} {made.get(k)} ≠ {here[k]}" for k in keys if made.get(k) != here[k]]
    if diff:
        raise RecipeError(f"recipe {name} was made for {made.get('id')!r}, not {model.name!r}: " + ", ".join(diff))
