"""llama.cpp control vectors: residual-stream additions as the GGUF file llama.cpp, repeng and EasySteer share.

The format (llama.cpp `common/common.cpp` `common_control_vector_load_one`, `src/llama-adapter.cpp`):
`general.architecture = "controlvector"`, `controlvector.model_hint`, `controlvector.layer_count`, and
one F32 1-D tensor `direction.N` `[n_embd]` per steered layer, N ≥ 1. The loader reads only the tensors
(several with one N are summed) into a buffer that starts at layer 1; llama.cpp adds layer N's slice to
the output of block N (0-based), which is interp's `blocks.N.hook_resid_post`. Block 0 has no slot.
The mapping is decided by `tests/test_control_vectors_llamacpp.py`, which runs llama.cpp itself.

Only `Add` edits on `blocks.L.hook_resid_post` at all positions travel (a `blocks.L.hook_resid_pre`
addition is the same as one on `blocks.{L-1}.hook_resid_post` and travels as that); everything
else a recipe may hold (clamps, gates, ablations, low-rank terms, position rules, MLP sites) has no
place in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .cache import atomic_path
from .edits import Add
from .errors import InterpError

ARCHITECTURE = "controlvector"
_RESID = re.compile(r"blocks\.(\d+)\.hook_resid_(post|pre)")


class ControlVectorError(InterpError):
    """A control-vector file that llama.cpp would refuse, or a recipe that cannot become one."""


@dataclass
class ControlVector:
    """`directions[N]` `[n_embd]` float32 is added to the output of block N (N ≥ 1), as llama.cpp does."""

    directions: dict[int, torch.Tensor]
    model_hint: str = ""
    dropped: list[str] = field(default_factory=list)  # what a recipe held that could not travel

    @property
    def n_embd(self) -> int:
        return next(iter(self.directions.values())).numel()

    def scaled(self, scale: float) -> "ControlVector":
        return ControlVector({n: v * scale for n, v in self.directions.items()}, self.model_hint, list(self.dropped))

    def edits(self) -> list[Add]:
        """One `Add` per layer on `blocks.N.hook_resid_post`, in layer order."""
        return [Add(f"blocks.{n}.hook_resid_post", v.clone(), 1.0) for n, v in sorted(self.directions.items())]


def _describe(i: int, e) -> str:
    where = f" ({e.positions})" if e.positions != "all" else ""
    return f"edit {i}: {e.kind} at {e.site}{where}"


def _one_width(directions: dict[int, torch.Tensor], what: str) -> None:
    widths = {v.numel() for v in directions.values()}
    if len(widths) > 1:
        raise ControlVectorError(f"{what} have different sizes {sorted(widths)}")


def from_edits(edits: Sequence, *, model_hint: str = "", drop_others: bool = False) -> ControlVector:
    """The control vector of a recipe's residual additions (summed per layer, scale folded in).

    Raises ControlVectorError listing what cannot travel, unless `drop_others` (then it is in `.dropped`)."""
    directions: dict[int, torch.Tensor] = {}
    refused: list[str] = []
    for i, e in enumerate(edits):
        m = _RESID.fullmatch(e.site)
        layer = None if m is None else int(m[1]) - (m[2] == "pre")
        if e.kind != "add" or m is None or e.positions != "all":
            refused.append(_describe(i, e))
        elif layer < 1:
            refused.append(_describe(i, e) + " (llama.cpp cannot steer block 0's input or output)")
        else:
            v = e.vector.detach().to(torch.float32).cpu() * e.scale
            directions[layer] = directions.get(layer, torch.zeros_like(v)) + v
    if refused and not drop_others:
        raise ControlVectorError("cannot travel as a llama.cpp control vector (only additions to "
                                 "blocks.L.hook_resid_post at all positions can; --drop-others drops the rest): "
                                 + "; ".join(refused))
    if not directions:
        raise ControlVectorError("the recipe has no residual addition that a control vector can carry")
    _one_width(directions, "the additions")
    return ControlVector(directions, model_hint, refused)


def write_gguf(path: str | Path, cv: ControlVector, *, scale: float = 1.0) -> Path:
    """Write `cv` × `scale` as a llama.cpp control-vector GGUF, atomically."""
    import gguf

    path, cv = Path(path), cv.scaled(scale)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
        w.add_string(f"{ARCHITECTURE}.model_hint", cv.model_hint)
        w.add_uint32(f"{ARCHITECTURE}.layer_count", len(cv.directions))
        for n, v in sorted(cv.directions.items()):
            w.add_tensor(f"direction.{n}", v.to(torch.float32).numpy())
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def read_gguf(path: str | Path) -> ControlVector:
    """The control vector in a GGUF file, refusing what llama.cpp's loader refuses (one line each)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ControlVectorError(f"control vector {path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
        tensors = [(t.name, t.tensor_type, [int(s) for s in t.shape], np.array(t.data)) for t in reader.tensors]
        fields = reader.fields
    except Exception as exc:  # the reader raises several types on a truncated or foreign file
        raise ControlVectorError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    arch = fields.get("general.architecture")
    if arch is not None and bytes(arch.parts[-1]).decode(errors="replace") != ARCHITECTURE:
        raise ControlVectorError(f"{path} is a GGUF {bytes(arch.parts[-1]).decode(errors='replace')!r} file, "
                                 f"not a control vector")
    hint = fields.get(f"{ARCHITECTURE}.model_hint")
    model_hint = bytes(hint.parts[-1]).decode(errors="replace") if hint is not None else ""
    if not tensors:
        raise ControlVectorError(f"{path} has no direction tensors")
    directions: dict[int, torch.Tensor] = {}
    for name, kind, shape, data in tensors:
        m = re.fullmatch(r"direction\.(\d+)", name)
        if m is None:
            raise ControlVectorError(f"{path}: tensor {name!r} is not named direction.N")
        n = int(m[1])
        if n == 0:
            raise ControlVectorError(f"{path}: direction.0 — llama.cpp has no slot for block 0 (N starts at 1)")
        if kind != gguf.GGMLQuantizationType.F32:
            raise ControlVectorError(f"{path}: {name} is {kind.name}, not F32")
        if len(shape) != 1:
            raise ControlVectorError(f"{path}: {name} has shape {shape}, not one dimension")
        v = torch.from_numpy(data.astype(np.float32).reshape(-1).copy())
        directions[n] = directions[n] + v if n in directions else v
    _one_width(directions, f"{path}: direction tensors")
    return ControlVector(directions, model_hint)


def check_model(cv: ControlVector, n_layers: int, d_model: int, name: str = "the model") -> None:
    """ControlVectorError unless every direction fits a model of `n_layers` blocks and width `d_model`."""
    if cv.n_embd != d_model:
        raise ControlVectorError(f"the control vector's n_embd is {cv.n_embd}, but {name} has d_model {d_model}")
    beyond = sorted(n for n in cv.directions if n >= n_layers)
    if beyond:
        raise ControlVectorError(f"the control vector steers block(s) {beyond}, but {name} has {n_layers} "
                                 f"blocks (0-{n_layers - 1})")


def llama_buffer(cv: ControlVector, n_layers: int) -> np.ndarray:
    """The flat `[(n_layers - 1) · n_embd]` float32 buffer `llama_set_adapter_cvec` takes (layer 1 first),
    laid out as llama.cpp's `common_control_vector_load` lays out a file."""
    buf = np.zeros((n_layers - 1) * cv.n_embd, dtype=np.float32)
    for n, v in cv.directions.items():
        buf[(n - 1) * cv.n_embd:n * cv.n_embd] += v.numpy()
    return buf


def set_in_llama_cpp(llm, cv: ControlVector | None, *, scale: float = 1.0) -> None:
    """Apply `cv` × `scale` to a `llama_cpp.Llama` (llama-cpp-python) for its next evaluations, as llama.cpp's
    `--control-vector-scaled FILE SCALE` does; None clears it. Checks the width and blocks against its model."""
    import ctypes

    import llama_cpp

    n_layers, n_embd = llama_cpp.llama_model_n_layer(llm.model), llama_cpp.llama_model_n_embd(llm.model)
    if cv is None:
        rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, n_embd, 1, n_layers - 1)
    else:
        check_model(cv, n_layers, n_embd, "the llama.cpp model")
        buf = llama_buffer(cv.scaled(scale), n_layers)
        rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), buf.size,
                                              n_embd, 1, n_layers - 1)
    if rc != 0:
        raise ControlVectorError(f"llama.cpp refused the control vector (llama_set_adapter_cvec returned {rc})")
