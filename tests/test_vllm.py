"""interp's edits inside vLLM (issue 28, in progress): per-request recipes on vLLM's flattened batches equal
interp.generate alone. Runs tests/vllm/parity.py in `.venv-vllm` (`make install-vllm`); skipped where it is absent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not VLLM_PY.exists(), reason=".venv-vllm is not built here (make install-vllm)")]


def test_recipes_per_request_on_vllm_equal_generate_alone():
    proc = subprocess.run([str(VLLM_PY), str(ROOT / "tests" / "vllm" / "parity.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["mismatches"] == [] and result["equal"] == result["jobs"] == 12, result
    assert result["steered_differ"] >= 6, result  # the recipes change the text, so the equality means something
