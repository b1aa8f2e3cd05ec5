"""The vLLM engine (issue 28): one vLLM engine per test session (tests/vllm/session.py, run in `.venv-vllm`)
behind `interp serve`'s app, checked against the transformers engine in the same process. Skipped only
where `.venv-vllm` is absent (`make install-vllm`; `make test` builds it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"

pytestmark = pytest.mark.slow
needs_vllm = pytest.mark.skipif(not VLLM_PY.exists(), reason=".venv-vllm is not built here (make install-vllm)")


@pytest.fixture(scope="module")
def session() -> dict:
    if not VLLM_PY.exists():
        pytest.skip(".venv-vllm is not built here (make install-vllm)")
    proc = subprocess.run([str(VLLM_PY), str(ROOT / "tests" / "vllm" / "session.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1])


def test_recipes_per_request_served_by_vllm_equal_the_transformers_engine(session):
    parity = session["parity"]
    assert parity["mismatches"] == [] and parity["equal"] == parity["jobs"] == 32, parity
    # the recipes change the text (recipe c: residual-in, block outputs, low-rank terms), so equality means something
    assert parity["steered_differ"] >= 18 and parity["c_differ"] >= 6, parity


def test_logprobs_from_vllm_have_the_openai_shape(session):
    lp = session["logprobs"]
    assert lp["text_equal"] and lp["n"] == 16 and lp["greedy_is_top"] and lp["sorted"], lp


def test_a_prefix_cached_unsteered_is_never_reused_for_a_steered_request(session):
    salted, unsalted = session["cache"]["salted"], session["cache"]["unsalted"]
    assert salted["steered_differs_from_plain"] and salted["plain_equal"] and salted["steered_equal"], salted
    # the same sequence without cache_salt goes wrong: the check can fail
    assert unsalted["plain_equal"] and not unsalted["steered_equal"], unsalted


def test_capture_on_vllm_equals_the_transformers_engine(session):
    for site, c in session["capture"].items():
        assert c["tokens_equal"], (site, c)
        assert c["count_rel_diff"] <= 0.005, (site, c)
        assert c["top1_equal"] >= 0.99, (site, c)


def test_an_edit_vllm_cannot_run_is_refused_by_name_before_it_runs(session):
    status, message = session["refused"]
    assert status == 400 and "blocks.2.hook_resid_mid" in message and "not available on the vLLM engine" in message


@needs_vllm
@pytest.mark.parametrize("flags,named", [(["--tensor-parallel-size", "0"], "--tensor-parallel-size"),
                                         (["--compile", "--tap", "blocks.1.hook_resid_mid"], "--tap: site")])
def test_serve_engine_vllm_refuses_bad_flags_with_one_line(tmp_path, flags, named):
    cmd = [str(VLLM_PY), "-m", "cli.main", "serve", "--model", "smollm2-135m", "--engine", "vllm", *flags]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]


@pytest.mark.parametrize("flags,named", [(["--engine", "vllm", "--tap", "blocks.1.hook_resid_post"], "add --compile"),
                                         (["--compile"], "belong to --engine vllm")])
def test_compile_and_tap_flags_make_sense_only_together_on_vllm(flags, named):
    proc = subprocess.run([sys.executable, "-m", "cli.main", "serve", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr[-2000:]


def test_engine_vllm_without_vllm_says_how_to_get_it(tmp_path):
    """In the main environment vLLM is absent: the CLI says so in one line (exit 2)."""
    pytest.importorskip("fastapi")
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0:
        pytest.skip("vLLM is importable here")
    proc = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--engine", "vllm"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "make install-vllm" in proc.stderr, proc.stderr[-2000:]
