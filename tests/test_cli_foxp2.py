"""`interp analyze --probe foxp2` and `interp steer foxp2`: files written, recipe usable; bad input exits 2."""

from __future__ import annotations

import json

import pytest

from atlases import load_atlas
from cli.main import main
from interp.recipes import read_recipe

SMALL = ["--window", "20-21", "--sae-steps", "40", "--foxp2-verses", "24"]


@pytest.mark.slow
def test_analyze_foxp2_writes_atlas_spectra_and_a_recipe_that_steer_uses(smollm2, tmp_path, capsys) -> None:
    out = tmp_path / "fx"
    assert main(["analyze", "--probe", "foxp2", "--target", "es", "--strength", "2", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    atlas = load_atlas(out, model=smollm2.name)
    p = atlas.params
    assert atlas.method == "foxp2" and p["window"] == [20, 21] and p["alpha"] == 2.0
    assert set(p["layers"]) == {"20", "21"} and len(p["spectra"]) == smollm2.adapter.n_layers
    assert all(0 < f["explained_variance"] < 1 and f["target_neurons"] for f in p["layers"].values())
    assert atlas.get("blocks.20.mlp.hook_post", "mean_diff").shape == (smollm2.adapter.d_mlp,)
    assert (out / "spectra.png").read_bytes().startswith(b"\x89PNG") and "FOXP2" in (out / "report.html").read_text()
    header, edits = read_recipe(out / "recipe.safetensors")
    assert header["provenance"]["target"] == "es" and [e.kind for e in edits] == ["add", "ablate"] * 2
    assert "wrote" in printed and "window" in printed
    assert main(["steer", "--recipe", str(out / "recipe.safetensors"), "--prompt", "My friend and I talked about",
                 "--max-new-tokens", "6", "--repetition-penalty", "1.3"]) == 0
    assert "recipe recipe.safetensors: 4 edit(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_steer_method_foxp2_localises_then_generates_and_saves_the_recipe(smollm2, tmp_path, capsys) -> None:
    rec = tmp_path / "es.safetensors"
    assert main(["steer", "foxp2", "--target", "es", *SMALL, "--strength", "1.5", "--save-recipe", str(rec),
                 "--prompt", "The best way to learn is", "--max-new-tokens", "6", "--compare"]) == 0
    out = capsys.readouterr().out
    assert "foxp2 → es at mlp.hook_post: window [20, 21]" in out and "unsteered" in out
    assert json.loads(json.dumps(read_recipe(rec)[0]))["provenance"]["window"] == [20, 21]


@pytest.mark.parametrize("argv, message", [
    (["analyze", "--probe", "foxp2", "--out", "X"], "needs --target"),
    (["analyze", "--probe", "foxp2", "--target", "en", "--out", "X"], "other than English"),
    (["analyze", "--probe", "foxp2", "--target", "xx", "--out", "X"], "parallel Bible has"),
    (["steer", "foxp2", "--prompt", "hi"], "needs --target"),
    (["steer", "--prompt", "hi", "--target", "es"], "--target goes with interp steer foxp2"),
    (["analyze", "--probe", "foxp2", "--target", "es", "--sae", "20", "--out", "X"], "use LAYER=DIR"),
    (["analyze", "--probe", "foxp2", "--target", "es", "--sae", "20=nowhere", "--out", "X"], "no cfg.json"),
    (["steer", "foxp2", "--prompt", "hi", "--target", "es", "--strength", "lots"], "number or auto"),
    (["steer", "--prompt", "hi", "--clamp", "blocks.1.mlp.hook_post:1=2", "--repetition-penalty", "0"],
     "repetition-penalty"),
])
def test_bad_foxp2_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys) -> None:
    argv = [str(tmp_path / "X") if a == "X" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "X").exists()
