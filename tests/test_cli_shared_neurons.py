"""`interp analyze --probe shared-neurons` / `interp steer --method snrf`: bad input exits 2 with one line."""

from __future__ import annotations

import pytest

from cli.main import main


@pytest.mark.parametrize("args, message", [
    (["analyze", "--probe", "shared-neurons", "--out", "o"], "needs --pair LLM"),
    (["analyze", "--probe", "shared-neurons", "--pair", "x", "--ratio", "1.5", "--out", "o"], "--ratio in (0, 1]"),
    (["steer", "--prompt", "x", "--method", "snrf"], "needs --donor LLM"),
    (["steer", "--prompt", "x", "--method", "snrf", "--donor", "y", "--rank", "0"], "--rank must be at least 1"),
    (["steer", "--prompt", "x", "--donor", "y"], "go with --method snrf"),
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
