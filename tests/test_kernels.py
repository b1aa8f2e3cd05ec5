"""The Triton kernel for fused site edits equals the torch path (needs a CUDA GPU)."""

from __future__ import annotations

import pytest
import torch

import interp
from interp import kernels
from interp.engine import FusedSite, PositionState

pytestmark = pytest.mark.skipif(
    not kernels.available(),
    reason="the Triton kernel needs a CUDA GPU and triton; this machine has "
    + ("no CUDA GPU" if not torch.cuda.is_available() else "no triton"),
)


def _edits(width: int, hard: bool):
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(width, generator=g)[:32]
    return [
        interp.Ablate("s", torch.randn(2, width, generator=g)),
        interp.Scale("s", idx, torch.rand(32, generator=g) * 2),
        interp.Gate("s", torch.randn(width, generator=g) * 0.1, torch.rand(width, generator=g) + 0.5, 0.7, hard),
        interp.Clamp("s", idx[:8], torch.randn(8, generator=g)),
        interp.Add("s", torch.randn(width, generator=g), 1.5),
    ]


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_kernel_matches_torch_path(hard, dtype, tol):
    width = 1536
    fused = FusedSite.build(_edits(width, hard), width)
    assert fused.kernel_ready
    x = torch.randn(4, 33, width, device="cuda").to(dtype)
    state = PositionState()
    got = fused(x, state)  # CUDA: the Triton kernel
    expect = fused(x.cpu().float(), state).to(dtype)  # CPU: the torch path
    torch.testing.assert_close(got.cpu(), expect, rtol=tol, atol=tol)
