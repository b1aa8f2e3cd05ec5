"""Long runs (issue 13): checkpoints, resume after a crash or a SIGKILL, the output lock, NaN activations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import interp
from atlases import load_atlas
from cli.main import main
from interp.runs import Checkpoint, CheckpointError, reducer_tensors, stream

ROOT = Path(__file__).resolve().parents[1]
SITES = ["blocks.0.mlp.hook_post", "blocks.4.mlp.hook_post"]


def _texts(n: int = 40) -> list[str]:
    from probes.language_counts import bible_texts

    t = bible_texts(["en", "fr"], limit=n // 2)
    return t["en"] + t["fr"]


def _run(model, texts, checkpoint=None, crash_after: int | None = None):
    reducers = [interp.ActivationFrequency(active_sums=True), interp.Moments(), interp.TopK(4)]
    with interp.capture(model, SITES, reducers) as run:
        if crash_after is not None:
            feed = run.feed

            def crashing(*a, after_batch=None, **kw):
                def after(n):
                    after_batch(n)
                    if n == crash_after:
                        raise KeyboardInterrupt  # the run dies right after its checkpoint
                return feed(*a, after_batch=after, **kw)

            run.feed = crashing
        stream(run, texts, batch_size=3, max_length=64, progress=False, checkpoint=checkpoint)
    return run


def test_a_crashed_run_resumed_equals_an_uninterrupted_one(smollm2, tmp_path) -> None:
    texts = _texts(24)
    whole = reducer_tensors(_run(smollm2, texts))
    ck = Checkpoint(tmp_path / "ck", every=2)
    with pytest.raises(KeyboardInterrupt):
        _run(smollm2, texts, ck, crash_after=4)
    assert ck.file(0, 1).exists()
    with pytest.raises(CheckpointError, match="--resume"):  # a fresh run does not silently drop the progress
        _run(smollm2, texts, ck)
    resumed = _run(smollm2, texts, Checkpoint(tmp_path / "ck", every=2, resume=True))
    assert resumed.tokens_seen == _run(smollm2, texts).tokens_seen
    assert whole.keys() == reducer_tensors(resumed).keys()
    for k, v in reducer_tensors(resumed).items():
        assert torch.equal(v, whole[k]), k  # bit for bit: the same sums in the same order


def test_a_checkpoint_of_another_run_or_a_corrupt_one_is_refused(smollm2, tmp_path) -> None:
    ck = Checkpoint(tmp_path / "ck", every=2)
    with pytest.raises(KeyboardInterrupt):
        _run(smollm2, _texts(), ck, crash_after=2)
    with pytest.raises(CheckpointError, match="another run"):
        _run(smollm2, _texts(20), Checkpoint(tmp_path / "ck", every=2, resume=True))  # another corpus
    ck.file(0, 1).write_bytes(ck.file(0, 1).read_bytes()[:300])  # truncated
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        _run(smollm2, _texts(), Checkpoint(tmp_path / "ck", every=2, resume=True))
    with pytest.raises(CheckpointError):
        Checkpoint(tmp_path / "x", every=0)


def test_nan_activations_stop_the_capture_with_a_clear_error(smollm2) -> None:
    w = smollm2.hf.model.layers[3].mlp.down_proj.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w[0, 0] = float("nan")  # residual channel 0 is NaN from layer 3 on
        with pytest.raises(interp.InterpError, match=r"non-finite activations \(NaN or inf\) at blocks.4.mlp.hook_post"):
            _run(smollm2, _texts(8))
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_a_second_run_on_the_same_out_fails_at_once_and_the_first_is_untouched(tmp_path, capsys) -> None:
    from cli.runs import output_lock

    out = tmp_path / "atlas"
    with output_lock(out):
        code = main(["analyze", "--corpus", "demo", "--limit", "4", "--layers", "0", "--out", str(out), "--quiet"])
        assert code == 2 and "another interp run is writing" in capsys.readouterr().err
        assert not out.exists()
    assert not (tmp_path / ".atlas.lock").exists()  # released and removed
    with output_lock(out):  # and free again
        pass


def test_launcher_commands_drop_the_launcher_options() -> None:
    from cli.runs import launcher_command

    argv = ["analyze", "--launcher", "torchrun", "--processes=3", "--corpus", "demo", "--launcher-args", "--x 1",
            "--out", "o"]
    cmd = launcher_command("torchrun", 3, "", argv)
    assert cmd[-6:] == ["cli.main", "analyze", "--corpus", "demo", "--out", "o"] and "--standalone" in cmd
    assert cmd[cmd.index("--nproc-per-node") + 1] == "3"
    multi = launcher_command("torchrun", 2, "--nnodes 2 --rdzv-endpoint h:1", argv)
    assert "--standalone" not in multi and "--rdzv-endpoint" in multi
    acc = launcher_command("accelerate", 2, "--num_machines 2 --machine_rank 1", argv)
    assert acc.count("--num_machines") == 1 and "--main_process_port" in acc and "accelerate.commands.launch" in acc
    with pytest.raises(interp.InterpError):
        launcher_command("torchrun", 0, "", argv)
    with pytest.raises(interp.InterpError, match="launcher-args"):
        launcher_command("torchrun", 2, "'unclosed", argv)


# ---------------------------------------------------------------- slow: kill -9 and resume
ARGS = ["analyze", "--model", "smollm2-135m", "--corpus", "bible:en,fr:40", "--sites", "mlp.hook_post",
        "--layers", "0,5", "--dtype", "float32", "--batch-size", "2", "--top-k", "4", "--checkpoint-every", "5",
        "--quiet"]


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    return env


@pytest.mark.slow
def test_a_run_killed_mid_way_and_resumed_writes_the_same_atlas(tmp_path) -> None:
    cli = [sys.executable, "-m", "cli.main"]
    done = subprocess.run([*cli, *ARGS, "--out", str(tmp_path / "whole")], cwd=ROOT, env=_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "killed"
    ckpt = tmp_path / ".killed.checkpoint" / "rank-0-of-1.safetensors"
    proc = subprocess.Popen([*cli, *ARGS, "--out", str(out)], cwd=ROOT, env=_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # into the batches after the checkpoint
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed; give it more batches"
    assert ckpt.exists() and not out.exists()
    again = subprocess.run([*cli, *ARGS, "--out", str(out)], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr  # progress is not dropped by accident
    resumed = subprocess.run([*cli, *ARGS, "--out", str(out), "--resume"], cwd=ROOT, env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not ckpt.parent.exists()  # the checkpoint goes once the atlas is written
    a, b = load_atlas(tmp_path / "whole"), load_atlas(out)
    assert a.params == b.params and a.tensors.keys() == b.tensors.keys()
    for k, v in a.tensors.items():
        assert torch.equal(v, b.tensors[k]), k


def test_gigantic_and_empty_prompts_are_refused_before_any_forward(smollm2, capsys) -> None:
    with pytest.raises(interp.EditError, match="exceeds the model's 8192 positions"):
        interp.generate(smollm2, ["word " * 9000], max_new_tokens=4)
    with pytest.raises(interp.EditError, match="at least one token"):
        interp.generate(smollm2, [""], max_new_tokens=4)
    assert main(["steer", "--prompt", "word " * 9000, "--max-new-tokens", "2"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
