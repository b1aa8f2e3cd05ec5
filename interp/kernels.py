"""A Triton kernel for the elementwise tail of a fused site: scale → gate → clamp → add.

One pass over the activation `[rows, width]` in place of up to four torch
ops. Used by `FusedSite` on CUDA tensors when Triton is installed and the
site's elementwise edits all apply at every position with at most one gate;
everything else (and every CPU run) takes the torch path, which defines the
semantics. `available()` says whether the engine uses the kernel here.

Triton is imported on the first `fused_tail` call (from `interp._triton_tail`),
never by `import interp`. Under `TRITON_INTERPRET=1` (set before that first
call) `fused_tail` also runs on CPU tensors, through Triton's interpreter: the
test suite checks the kernel that way on machines without a GPU. The engine
itself never takes the kernel path on CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache

import torch

BLOCK_R, BLOCK_W = 16, 128  # rows and columns of one program's tile


def installed() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch; a test extra elsewhere)."""
    return importlib.util.find_spec("triton") is not None


def available() -> bool:
    """Whether the engine uses the kernel: a CUDA GPU and Triton."""
    return torch.cuda.is_available() and installed()


@cache
def _program():
    return importlib.import_module("interp._triton_tail")


def fused_tail(x: torch.Tensor, *, gain=None, gate=None, clamp=None, add=None) -> torch.Tensor:
    """Apply scale, gate (gains, thresholds, temperature, hard), clamp (mask, values), add in one kernel.

    x: [..., width] on CUDA (or on CPU under TRITON_INTERPRET=1); parameters are [width] float32
    tensors on x's device. Computes in float32 and returns a new tensor of x's shape and dtype.
    """
    prog = _program()
    width = x.shape[-1]
    flat = x.reshape(-1, width).contiguous()
    out = torch.empty_like(flat)
    dummy = torch.empty(1, device=x.device, dtype=torch.float32)
    g_gains, g_thr, temp, hard = gate if gate is not None else (dummy, dummy, 1.0, False)
    c_mask, c_vals = clamp if clamp is not None else (dummy, dummy)
    grid = (prog.cdiv(flat.shape[0], BLOCK_R), prog.cdiv(width, BLOCK_W))
    prog._fused_tail[grid](
        flat, out, gain if gain is not None else dummy, g_thr, g_gains,
        c_mask.to(torch.int8) if clamp is not None else dummy, c_vals, add if add is not None else dummy,
        flat.shape[0], width, 1.0 / temp,
        HAS_SCALE=gain is not None, HAS_GATE=gate is not None, HARD=bool(hard),
        HAS_CLAMP=clamp is not None, HAS_ADD=add is not None, BLOCK_R=BLOCK_R, BLOCK_W=BLOCK_W,
    )
    return out.view_as(x)
