"""Data-parallel capture (issue 13): two gloo processes under torchrun write the same atlas as one process,
and reducers cross process boundaries as safetensors bytes (never pickled)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import interp
from interp import distributed as D

ROOT = Path(__file__).resolve().parents[1]


def test_shards_are_whole_batches_of_the_one_process_plan() -> None:
    from interp.capture import _as_docs, plan
    from interp.runs import shard_batches

    docs = _as_docs(["a" * n for n in (3, 9, 1, 9, 4, 7, 2, 9, 5, 6, 8)] + [" "])  # ties, and a blank document
    whole = plan(docs, 3)
    parts = [shard_batches(docs, 3, r, 3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(11))  # every non-blank document once
    for r, part in enumerate(parts):
        assert plan(docs, 3, indices=part) == whole[r::3]  # the rank re-plans exactly its batches
    assert whole[0] == [1, 3, 7] and D.world() == (0, 1)


def test_reducers_round_trip_through_bytes() -> None:
    freq, top = interp.ActivationFrequency(active_sums=True), interp.TopK(3)
    for r in (freq, top):
        r.bind("blocks.0.mlp.hook_post", 5, ["en", "fr"])
        for v in r.state["blocks.0.mlp.hook_post"].values():
            v.copy_(torch.arange(v.numel()).reshape(v.shape).to(v.dtype))
    for r in (freq, top):
        back = D._from_bytes(D._to_bytes(r))
        assert type(back) is type(r) and back.groups == r.groups and back.settings() == r.settings()
        assert all(torch.equal(back.state[s][k], v) for s, st in r.state.items() for k, v in st.items())
    empty = D._from_bytes(D._to_bytes(interp.Moments()))
    assert empty.state == {}


@pytest.mark.slow
def test_two_gloo_processes_write_the_same_atlas_as_one(tmp_path) -> None:
    from atlases import load_atlas

    args = ["analyze", "--model", "smollm2-135m", "--corpus", "bible:en,fr:24", "--sites", "mlp.hook_pre,mlp.hook_post",
            "--layers", "0,7", "--dtype", "float32", "--batch-size", "4", "--top-k", "4", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, "-m", "cli.main", *args, "--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "cli.main", *args, "--out", str(tmp_path / "two")], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_atlas(tmp_path / "one"), load_atlas(tmp_path / "two")
    assert a.sites == b.sites and a.params["n_tokens"] == b.params["n_tokens"] > 0
    for key, x in a.tensors.items():
        y = b.tensors[key]
        if key.endswith(("/counts", "/tokens", "/topk_values", "/topk_doc", "/topk_pos")):
            assert torch.equal(x, y), key  # each rank ran whole batches of the one-process run: bit for bit
        else:
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6, msg=key)  # sums: merge order and rounding


def test_other_probes_refuse_to_run_under_a_launcher(monkeypatch, tmp_path, capsys) -> None:
    from cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["analyze", "--probe", "lm-head", "--out", str(tmp_path / "x")]) == 2
    assert "does not run data-parallel" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    assert main(["analyze", "--probe", "lm-head", "--launcher", "torchrun", "--out", str(tmp_path / "x")]) == 2
    assert "--launcher, torchrun and accelerate work with stats, language-neurons, milan" in capsys.readouterr().err


def _launched(tmp_path, name: str, args: list[str], launcher: str | None) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    extra = ["--launcher", launcher, "--processes", "2"] if launcher else []
    done = subprocess.run([sys.executable, "-m", "cli.main", *args, *extra, "--out", str(tmp_path / name)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / name


@pytest.mark.slow
def test_language_neurons_under_torchrun_equal_one_process(tmp_path) -> None:
    from atlases import load_atlas

    args = ["analyze", "--probe", "language-neurons", "--langs", "en,fr", "--verses", "16", "--grid-verses", "0",
            "--batch-size", "4", "--dtype", "float32", "--quiet"]
    a = load_atlas(_launched(tmp_path, "one", args, None))
    b = load_atlas(_launched(tmp_path, "two", args, "torchrun"))
    assert a.params["tokens_per_language"] == b.params["tokens_per_language"]
    for key, x in a.tensors.items():
        if key.endswith("/active_mean"):
            torch.testing.assert_close(b.tensors[key], x, rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(x, b.tensors[key]), key  # counts and the masks drawn from them: bit for bit


@pytest.mark.slow
def test_milan_under_accelerate_launch_equals_one_process(small_captioner, tmp_path) -> None:
    from atlases import load_atlas

    args = ["analyze", "--probe", "milan", "--corpus", "demo", "--limit", "24", "--layers", "3", "--units", "5,9",
            "--beam", "4", "--max-tokens", "6", "--top-k", "5", "--describer", str(small_captioner), "--quiet"]
    a = load_atlas(_launched(tmp_path, "one", args, None))
    b = load_atlas(_launched(tmp_path, "two", args, "accelerate"))
    site = "blocks.3.mlp.hook_post"
    assert torch.equal(a.tensors[f"{site}/threshold"], b.tensors[f"{site}/threshold"])  # exact quantiles merge exactly
    assert torch.equal(a.tensors[f"{site}/topk.doc"], b.tensors[f"{site}/topk.doc"])
    assert a.params["descriptions"] == b.params["descriptions"]


@pytest.mark.slow
def test_bad_input_under_a_launcher_is_one_line_and_exit_2(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-m", "cli.main", "analyze", "--corpus", "bible:xx", "--launcher", "torchrun",
                           "--processes", "2", "--quiet", "--out", str(tmp_path / "a")], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("interp: error:"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "a").exists()
