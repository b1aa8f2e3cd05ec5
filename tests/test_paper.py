"""Paper mode (issue 30): `Settings.paper()` / `as_paper()` switch every marked choice to the paper's value and
nothing else, provenance records them, the README's table is the generated one, and per method a `--paper` run
records the paper's choices and gives a different output where the choice matters (HFTP's: tests/test_cli_hftp.py;
brain axes: tests/test_cli_brain_axes.py; language neurons: tests/test_language_answers.py; FOXP2:
tests/test_foxp2_paper.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

import pytest

from cli import paper as paper_cli
from cli.main import main
from interp.paper import PaperSettings, differs


@dataclass
class Toy(PaperSettings):
    steps: int = 10
    window: list[int] = differs([1, 2], paper=[3], why="w")
    z: bool = differs(True, paper=False, why="self z", effect="measured")


def test_paper_switches_the_marked_choices_and_nothing_else():
    ours, paper = Toy(steps=5), Toy.paper(steps=5)
    assert (paper.window, paper.z, paper.steps) == ([3], False, 5)
    assert ours.as_paper() == paper and not ours.is_paper() and paper.is_paper()
    assert Toy.paper(z=True).z is True  # overrides win
    assert Toy().window is not Toy().window  # mutable defaults are per instance
    assert [c.setting for c in Toy.paper_choices()] == ["window", "z"]
    assert json.loads(json.dumps(paper.provenance())) == {"paper": True, "choices": {"window": [3], "z": False}}


def test_every_methods_choices_are_real_fields_with_a_reason():
    for _, _, cls in paper_cli.settings_classes():
        names = {f.name for f in fields(cls)}
        choices = cls.paper_choices()
        assert choices and all(c.setting in names and c.why and c.ours != c.paper for c in choices)
        assert cls.paper().is_paper() and not cls().is_paper()


def test_the_readme_table_is_the_generated_one():
    """Fails when a settings class's choices change without `python -m cli.paper --write`."""
    readme = paper_cli.README.read_text(encoding="utf-8")
    assert paper_cli.readme_section(readme) == paper_cli.table(), "run: python -m cli.paper --write"
    for _, _, cls in paper_cli.settings_classes():
        for c in cls.paper_choices():
            assert f"`{cls.__name__}.{c.setting}`" in readme


def test_paper_goes_with_the_steer_methods_that_have_choices(capsys):
    assert main(["steer", "--paper", "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "--paper goes with" in err and all(f"interp steer {m}" in err for m in ("brain-axis", "foxp2", "snrf"))


@pytest.mark.slow
def test_shared_neurons_paper_run_records_the_public_codes_quirks_and_finds_other_sets(tmp_path):
    import torch

    from atlases import load_atlas
    from testbeds import vlm as tb

    with tb._num_threads(1):
        paths = tb.build_testbed(reduced=True)
    common = ["--probe", "shared-neurons", "--model", str(paths.vlm), "--pair", str(paths.llm), "--samples", "6",
              "--quiet"]
    assert main(["analyze", *common, "--out", str(tmp_path / "ours")]) == 0
    assert main(["analyze", *common, "--paper", "--out", str(tmp_path / "paper")]) == 0
    ours, paper = load_atlas(tmp_path / "ours"), load_atlas(tmp_path / "paper")
    assert paper.params["paper_mode"]["shared"] == {"paper": True, "choices": {"swap_ratios": True,
                                                                                "pool_layers": True,
                                                                                "gqa_quirk": True}}
    assert paper.params["paper_mode"]["snrf"] == {"paper": True, "choices": {"beta_quirk": True}}
    assert ours.params["paper_mode"]["shared"]["paper"] is False
    differ = [k for k in ours.tensors if not torch.equal(ours.tensors[k], paper.tensors[k])]
    assert any(k.endswith("/shared") for k in differ)
