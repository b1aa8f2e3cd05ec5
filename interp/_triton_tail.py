"""The Triton program behind `interp.kernels.fused_tail`; importing this module imports Triton.

Kept apart so that `import interp` never pays for importing Triton: `interp.kernels` loads this
module on the first kernel call. Triton reads `TRITON_INTERPRET` when `_fused_tail` is defined,
that is when this module is first imported; with `TRITON_INTERPRET=1` the program runs on CPU
tensors through Triton's interpreter (how the test suite runs it on machines without a GPU).
"""

from __future__ import annotations

import triton
import triton.language as tl

cdiv = triton.cdiv


@triton.jit
def _fused_tail(x_ptr, y_ptr, gain_ptr, thr_ptr, ggain_ptr, cmask_ptr, cval_ptr, add_ptr,
                rows, width, inv_temp,
                HAS_SCALE: tl.constexpr, HAS_GATE: tl.constexpr, HARD: tl.constexpr,
                HAS_CLAMP: tl.constexpr, HAS_ADD: tl.constexpr,
                BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """One [BLOCK_R, BLOCK_W] tile of x [rows, width] → y, computed in float32, stored in y's dtype."""
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
