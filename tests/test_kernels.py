"""The Triton kernel of the fused edit engine equals the torch path, which defines the semantics.

It runs two ways:
- compiled, on a CUDA GPU with Triton, exactly as the engine uses it (`FusedSite.__call__`);
- through Triton's interpreter on CPU tensors everywhere else: `test_kernel_under_triton_interpreter`
  runs the same cases in a child pytest with `TRITON_INTERPRET=1`.

Why a child process: Triton chooses compiler or interpreter when the `@triton.jit` function is
defined (when `interp._triton_tail` is first imported) and keeps that choice for the process.
Setting the variable inside this process would depend on test order (any earlier kernel call
fixes the choice), and setting it for the whole session in conftest would make a GPU machine
test the interpreter instead of the compiled kernel and leak into every CLI subprocess. A child
with its own environment has neither problem, for a few seconds of start-up (torch, Triton).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import interp
from interp import kernels
from interp.engine import FusedSite, PositionState

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
SHAPES = [(2, 9, 1536), (3, 7, 333)]  # rows ragged against BLOCK_R; 333: not a power of two, ragged against BLOCK_W
CASES = [(shape, dtype, hard) for shape in SHAPES for dtype in (torch.float32, torch.bfloat16) for hard in (False, True)]
TRITON_WHEELS = sys.platform == "linux" and platform.machine() == "x86_64"  # where `.[test]` installs triton


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


@pytest.mark.skipif(not (kernels.available() or (INTERPRETED and kernels.installed())),
                    reason="the compiled kernel needs a CUDA GPU and triton (the interpreter runs it below)")
@pytest.mark.parametrize("shape,dtype,hard", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_kernel_matches_torch_path(shape, dtype, hard):
    """Kernel = torch path: to 1e-6 in float32; within one bfloat16 rounding in bfloat16.

    Both paths project (Ablate) in torch in x's dtype; the kernel then computes scale → gate →
    clamp → add in float32 and rounds once. The reference is that float32 torch tail on the same
    projected values: comparing with a float32 projection instead would charge the bfloat16
    matmul's rounding to the kernel (up to 0.2 here, amplified by the gains).
    """
    width = shape[-1]
    edits = _edits(width, hard)
    fused = FusedSite.build(edits, width)
    assert fused.kernel_ready
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)).to(device=DEVICE, dtype=dtype)
    state = PositionState()
    got = fused.apply_kernel(x) if INTERPRETED else fused(x, state)  # on CUDA, the engine's own dispatch
    projected = FusedSite.build(edits[:1], width)(x, state)  # the Ablate alone: torch path, x's device and dtype
    expect = FusedSite.build(edits[1:], width)(projected.cpu().float(), state).to(dtype)  # CPU: the torch path
    assert got.dtype == dtype and got.shape == x.shape
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-5)
    torch.testing.assert_close(got.cpu(), expect, **tol)


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="this is the child run")
def test_kernel_under_triton_interpreter():
    """Every case above passes through Triton's interpreter on CPU tensors (what `make test` runs without a GPU)."""
    if not kernels.installed():
        if TRITON_WHEELS:
            pytest.fail("triton is missing: `pip install -e '.[test]'` installs triton==3.9.0")
        pytest.skip(f"no triton wheel for {sys.platform}/{platform.machine()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(Path(__file__).resolve()), "-k", "test_kernel_matches_torch_path"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(rf"\b{len(CASES)} passed\b", out) and "skipped" not in out, out[-4000:]
