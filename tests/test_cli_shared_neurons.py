"""`interp analyze --probe shared-neurons` / `interp steer snrf`: bad input exits 2 with one line."""

from __future__ import annotations

import pytest

from cli.main import main


@pytest.mark.parametrize("args, message", [
    (["analyze", "--probe", "shared-neurons", "--out", "o"], "needs --pair LLM"),
    (["analyze", "--probe", "shared-neurons", "--pair", "x", "--ratio", "1.5", "--out", "o"], "--ratio in (0, 1]"),
    (["analyze", "--probe", "shared-neurons", "--pair", "x", "--snrf-beta", "0.5,big", "--out", "o"],
     "--snrf-beta takes comma-separated numbers"),
    (["steer", "snrf", "--prompt", "x"], "needs --donor LLM"),
    (["steer", "snrf", "--prompt", "x", "--donor", "y", "--rank", "0"], "argument --rank: must be a positive integer"),
    (["steer", "--prompt", "x", "--donor", "y"], "--donor goes with interp steer snrf"),
])
def test_bad_shared_neuron_input_is_one_line_and_exit_2(args, message, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_prompts_from_a_file_for_models_other_than_the_testbed(tmp_path, capsys) -> None:
    assert main(["analyze", "--probe", "shared-neurons", "--model", "no-such-model", "--pair", "x",
                 "--prompts", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "no-such-model" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_and_steer_snrf_on_the_reduced_testbed(tmp_path, capsys) -> None:
    import json

    import torch

    import interp
    from testbeds import vlm as tb

    with tb._num_threads(1):
        paths = tb.build_testbed(reduced=True)
    out = tmp_path / "shared"
    assert main(["analyze", "--probe", "shared-neurons", "--model", str(paths.vlm), "--pair", str(paths.llm),
                 "--samples", "6", "--amplify", "1.5", "--snrf-beta", "2", "--held-out", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "shared/VLM" in printed and "amplification of" in printed and "SNRF (r=4, β=2)" in printed
    atlas = json.loads((out / "atlas.json").read_text())
    assert set(atlas["params"]["tables"]) == {"amplification", "snrf beta=2"}
    assert set(atlas["params"]["tables"]["snrf beta=2"]) == {"base VLM", "SNRF (r=4, β=2)", "full delta (β=2)",
                                                             "random units (seed 0)"}
    assert (out / "overlap.png").read_bytes()[:4] == b"\x89PNG"

    merged = tmp_path / "merged"
    assert main(["steer", "snrf", "--model", str(paths.vlm), "--donor", str(paths.llm), "--samples", "6",
                 "--rank", "4", "--beta", "0.5", "--save-merged", str(merged), "--max-new-tokens", "3",
                 "--prompt", "Question: What is the product of 3 and 4?\nAnswer:"]) == 0
    assert "SNRF from" in capsys.readouterr().out
    vlm, fused = interp.load_model(paths.vlm), interp.load_model(merged)
    before, after = vlm.hf.state_dict(), fused.hf.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # only the text backbone's q/k/v/o/up/down weights move, and only where the two models differ (layers 13–16)
    assert changed and all(k.startswith("model.language_model.layers.") and
                           k.split(".")[-2] in {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"}
                           for k in changed)
    assert {int(k.split(".")[3]) for k in changed} <= {13, 14, 15, 16}
