"""A Triton kernel for the elementwise tail of a fused site: scale → gate → clamp → add.

One pass over the activation `[rows, width]` in place of up to four torch
ops. Used by `FusedSite` on CUDA tensors when Triton is installed and the
site's elementwise edits all apply at every position with at most one gate;
everything else (and every CPU run) takes the torch path, which defines the
semantics. `available()` says whether the kernel can run here.
"""

from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch only
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU machines
    triton = None


def available() -> bool:
    return triton is not None and torch.cuda.is_available()


if triton is not None:  # pragma: no cover - needs a CUDA GPU

    @triton.jit
    def _fused_tail(x_ptr, y_ptr, gain_ptr, thr_ptr, ggain_ptr, cmask_ptr, cval_ptr, add_ptr,
                    rows, width, inv_temp,
                    HAS_SCALE: tl.constexpr, HAS_GATE: tl.constexpr, HARD: tl.constexpr,
                    HAS_CLAMP: tl.constexpr, HAS_ADD: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        cm = c < width
        m = (r[:, None] < rows) & cm[None, :]
        offs = r[:, None] * width + c[None, :]
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_SCALE:
            x = x * tl.load(gain_ptr + c, mask=cm, other=1.0)[None, :]
        if HAS_GATE:
            t = tl.load(thr_ptr + c, mask=cm, other=0.0)[None, :]
            g = tl.load(ggain_ptr + c, mask=cm, other=1.0)[None, :]
            if HARD:
                x = g * tl.where(x > t, 1.0, 0.0) * x
            else:
                x = g * tl.sigmoid((x - t) * inv_temp) * x
        if HAS_CLAMP:
            keep = tl.load(cmask_ptr + c, mask=cm, other=0)[None, :] != 0
            x = tl.where(keep, tl.load(cval_ptr + c, mask=cm, other=0.0)[None, :], x)
        if HAS_ADD:
            x = x + tl.load(add_ptr + c, mask=cm, other=0.0)[None, :]
        tl.store(y_ptr + offs, x.to(y_ptr.dtype.element_ty), mask=m)


def fused_tail(x: torch.Tensor, *, gain=None, gate=None, clamp=None, add=None) -> torch.Tensor:
    """Apply scale, gate (gains, thresholds, temperature, hard), clamp (mask, values), add in one kernel.

    x: [..., width] on CUDA. Parameters are [width] float32 tensors on x's device.
    """
    width = x.shape[-1]
    flat = x.reshape(-1, width).contiguous()
    out = torch.empty_like(flat)
    dummy = torch.empty(1, device=x.device, dtype=torch.float32)
    g_gains, g_thr, temp, hard = gate if gate is not None else (dummy, dummy, 1.0, False)
    c_mask, c_vals = clamp if clamp is not None else (dummy, dummy)
    block_r, block_w = 16, 128
    grid = (triton.cdiv(flat.shape[0], block_r), triton.cdiv(width, block_w))
    _fused_tail[grid](
        flat, out, gain if gain is not None else dummy, g_thr, g_gains,
        c_mask.to(torch.int8) if clamp is not None else dummy, c_vals, add if add is not None else dummy,
        flat.shape[0], width, 1.0 / temp,
        HAS_SCALE=gain is not None, HAS_GATE=gate is not None, HARD=bool(hard),
        HAS_CLAMP=clamp is not None, HAS_ADD=add is not None, BLOCK_R=block_r, BLOCK_W=block_w,
    )
    return out.view_as(x)
