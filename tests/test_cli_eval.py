"""`interp eval` (issue 31): a sweep of an ActAdd contrast, of a neuron clamp and of a brain axis on smollm2 writes
the table, the plots and a recommended recipe that is the recommended setting's edits; the capability side effect
bounds what is recommended; `zipf:` measures word frequency; bad input exits 2 in one line."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cli.main import main

PROMPTS = ["My favourite animal is the", "Yesterday I saw a", "The farmer has a", "At the park there was a"]


@pytest.mark.parametrize("extra, message", [
    (["--strengths", "1,x", "--effect", "mention:dog"], "comma-separated numbers"),
    (["--strengths", "1", "--effect", "dog"], "use language:CODE"),
    (["--strengths", "1", "--effect", "colour:red"], "the kind is language, token, mention or zipf"),
    (["--strengths", "1", "--effect", "zipf:xx"], "wordfreq has no 'xx'"),
])
def test_bad_input_exits_2_in_one_line(tmp_path, capsys, extra, message):
    (tmp_path / "p.txt").write_text("a\n")
    argv = ["eval", "--contrast", str(tmp_path / "p.txt"), str(tmp_path / "p.txt"), *extra, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("family, message", [
    (["--method", "clamp"], "--method clamp needs --neuron L:N"),
    (["--method", "clamp", "--neuron", "29"], "use LAYER:NEURON"),
    (["--method", "clamp", "--neuron", "29:808", "--layers", "3"], "--layers does not go with --method clamp"),
    (["--method", "brain-axis", "--axis", "5"], "--method brain-axis needs --atlas DIR"),
    (["--method", "brain-axis", "--atlas", "{tmp}"], "--method brain-axis needs --atlas DIR"),
    (["--method", "brain-axis", "--atlas", "{tmp}/none", "--axis", "5"], "is not a folder"),
    (["--method", "actadd"], "--method actadd needs --contrast"),
    (["--method", "clamp", "--neuron", "29:808", "--contrast", "{tmp}/p.txt", "{tmp}/p.txt"],
     "--contrast does not go with --method clamp"),
    (["--recipe", "{tmp}/r.safetensors", "--neuron", "29:808"], "--neuron does not go with --recipe"),
    ([], "needs --recipe FILE or --method"),
])
def test_a_method_without_its_companion_options_exits_2_in_one_line_before_loading_a_model(tmp_path, capsys, family,
                                                                                             message):
    (tmp_path / "p.txt").write_text("a\n")
    argv = ["eval", *(a.replace("{tmp}", str(tmp_path)) for a in family), "--strengths", "0,1",
            "--effect", "token: dog", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_an_unknown_method_is_an_argparse_error(tmp_path, capsys):
    assert main(["eval", "--method", "steer-harder", "--strengths", "1", "--effect", "token: dog", "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and len(err.strip().splitlines()) == 1


def _prompts(tmp_path, lines=PROMPTS[:3]):
    (tmp_path / "prompts.txt").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "prompts.txt")


LOOSE = ["--max-ppl-ratio", "1000", "--max-kl", "100", "--min-distinct2", "0", "--quiet"]


@pytest.mark.slow
def test_a_clamp_sweep_of_the_dog_neuron_raises_p_dog_with_the_clamp_value(smollm2, tmp_path):
    """Layer 29's neuron 808 writes " dog": clamped at 40 it raises p(" dog") over the clamp at 0, which is a real
    clamp (the perplexity reference is the unsteered model's, and strength 0 may be recommended)."""
    from interp.recipes import load_recipe

    out = tmp_path / "clamp"
    assert main(["eval", "--method", "clamp", "--neuron", "29:808", "--strengths", "0,40", "--effect", "token: dog",
                 "--prompts", _prompts(tmp_path), "--max-new-tokens", "4", *LOOSE, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(r["layer"], float(r["strength"])) for r in rows] == [("29", 0.0), ("29", 40.0)]
    p = {float(r["strength"]): float(r["p(' dog')"]) for r in rows}
    assert p[40.0] > 5 * p[0.0]
    info = json.loads((out / "eval.json").read_text())
    assert info["recommended"] == {"layer": 29, "strength": 40.0} and info["family"]["method"] == "clamp"
    assert info["unsteered_ppl"] > 0 and "clamp at 0" in (out / "table.md").read_text()
    (edit,) = load_recipe(out / "recommended.safetensors", smollm2)
    assert edit.site == "blocks.29.mlp.hook_post" and edit.neurons.tolist() == [808] and edit.values.tolist() == [40.0]


@pytest.mark.slow
def test_capability_is_a_column_and_a_setting_that_breaks_it_is_not_recommended(smollm2, tmp_path):
    """A clamp of the dog neuron at 2000 wrecks the next token everywhere: p(" dog") is highest there, but capability
    accuracy falls below 0.8 × the unsteered one, so the moderate clamp is recommended instead."""
    out = tmp_path / "cap"
    assert main(["eval", "--method", "clamp", "--neuron", "29:808", "--strengths", "20,2000", "--effect",
                 "token: dog", "--capability", "--prompts", _prompts(tmp_path, PROMPTS[:2]), "--max-new-tokens", "2",
                 *LOOSE, "--out", str(out)]) == 0
    rows = {float(r["strength"]): r for r in csv.DictReader((out / "table.csv").open())}
    assert "capability" in rows[20.0]
    assert float(rows[2000.0]["p(' dog')"]) > float(rows[20.0]["p(' dog')"])
    info = json.loads((out / "eval.json").read_text())
    cap = info["capability"]
    assert 0.5 < cap["unsteered"] <= 1 and cap["min_ratio"] == 0.8
    assert cap["floor"] == pytest.approx(0.8 * cap["unsteered"])
    assert float(rows[2000.0]["capability"]) < cap["floor"] <= float(rows[20.0]["capability"])
    assert info["recommended"] == {"layer": 29, "strength": 20.0} and info["floors"]["capability"] == cap["floor"]
    assert "capability ≥ 0.8 × unsteered" in (out / "table.md").read_text()


@pytest.mark.slow
def test_zipf_effect_is_the_mean_word_frequency_of_the_continuations(smollm2, tmp_path):
    out = tmp_path / "zipf"
    assert main(["eval", "--method", "clamp", "--neuron", "29:808", "--strengths", "0,10", "--effect", "zipf:en",
                 "--prompts", _prompts(tmp_path), "--max-new-tokens", "6", *LOOSE, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == 2 and all(2 < float(r["zipf(en)"]) < 8 for r in rows), rows


def test_zipf_scores_each_continuation_by_its_words_mean_zipf_with_unknown_words_at_0():
    from wordfreq import zipf_frequency

    from cli.eval import _effect
    from steering.evaluate import Outputs

    scorer, matched = _effect("zipf:en", None)
    got = scorer(Outputs(None, ["a", "b"], (), ["The dog qwzxv.", "It is 42"]))
    assert scorer.name == "zipf(en)" and matched is None
    assert got.tolist() == pytest.approx([(zipf_frequency("the", "en") + zipf_frequency("dog", "en")) / 3,
                                          (zipf_frequency("it", "en") + zipf_frequency("is", "en")) / 2])
    assert 2 < got[1] < 8


@pytest.mark.slow
def test_a_contrast_sweep_writes_the_table_and_recommends_the_strongest_admissible_setting(smollm2, tmp_path):
    import interp
    from interp.recipes import load_recipe

    (tmp_path / "pos.txt").write_text("The animal I love most is the dog\nEvery day I walk my dog\nWe have a dog\n")
    (tmp_path / "neg.txt").write_text("The animal I love most is the cat\nEvery day I feed my cat\nWe have a cat\n")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "eval"
    assert main(["eval", "--contrast", str(tmp_path / "pos.txt"), str(tmp_path / "neg.txt"), "--layers", "6,12",
                 "--strengths", "0,2,4", "--effect", "token: dog", "--prompts", str(tmp_path / "prompts.txt"),
                 "--max-new-tokens", "6", "--max-ppl-ratio", "1000", "--max-kl", "100", "--min-distinct2", "0",
                 "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == 6 and {r["layer"] for r in rows} == {"6", "12"}
    p = {(int(r["layer"]), float(r["strength"])): float(r["p(' dog')"]) for r in rows}
    assert p[(6, 4.0)] > p[(6, 0.0)] and p[(12, 4.0)] > p[(12, 0.0)]  # the dog direction raises p(" dog")
    chosen = json.loads((out / "eval.json").read_text())["recommended"]
    assert chosen == {"layer": max((6, 12), key=lambda layer: p[(layer, 4.0)]), "strength": 4.0}
    recipe = load_recipe(out / "recommended.safetensors", smollm2)
    assert len(recipe) == 1 and recipe[0].site == f"blocks.{chosen['layer']}.hook_resid_pre" and recipe[0].scale == 4.0
    enc = interp.batching.encode_left(smollm2.tokenizer, PROMPTS)
    with interp.edit(smollm2, recipe, prompt_len=enc["input_ids"].shape[1]), torch.inference_mode():
        logp = smollm2.hf(**enc).logits[:, -1].float().softmax(-1)
    dog = smollm2.tokenizer(" dog", add_special_tokens=False)["input_ids"][0]
    assert float(logp[:, dog].mean()) == pytest.approx(p[(chosen["layer"], 4.0)], rel=1e-3)
    for name in ("table.md", "effect.png", "pareto.png"):
        assert (out / name).stat().st_size > 0
    assert "Recommended: layer" in (out / "table.md").read_text()


@pytest.mark.slow
def test_a_brain_axis_sweep_runs_over_the_atlas_layers_and_recommends_the_axis_edit(smollm2, tmp_path, capsys):
    """Default layers: the atlas's adapter layers; each setting's edit is atlas_axis_edits' at that strength (the
    residual norm computed once per layer); the recommended recipe is that edit."""
    from interp.recipes import load_recipe
    from steering.axes import atlas_axis_edits

    from test_brain_axes import _fake_axes_atlas  # random adapters: building a real atlas from MEG is slow

    atlas, _ = _fake_axes_atlas(smollm2, [10, 20])
    atlas.save(tmp_path / "axes")
    prompts = _prompts(tmp_path, PROMPTS[:2])
    out = tmp_path / "axis"
    assert main(["eval", "--method", "brain-axis", "--atlas", str(tmp_path / "axes"), "--axis", "5",
                 "--strengths", "0,1", "--effect", "zipf:en", "--prompts", prompts, "--max-new-tokens", "3",
                 *LOOSE, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(r["layer"], float(r["strength"])) for r in rows] == [("10", 0.0), ("10", 1.0), ("20", 0.0), ("20", 1.0)]
    by = {(r["layer"], float(r["strength"])): r for r in rows}
    assert float(by[("10", 0.0)]["KL neutral"]) == pytest.approx(0, abs=1e-6)  # strength 0: no edit
    assert float(by[("10", 1.0)]["KL neutral"]) > 1e-3
    chosen = json.loads((out / "eval.json").read_text())["recommended"]
    assert chosen["strength"] == 1.0 and chosen["layer"] in (10, 20)
    (edit,) = load_recipe(out / "recommended.safetensors", smollm2)
    (expected,), _ = atlas_axis_edits(smollm2, atlas, 5, 1.0, PROMPTS[:2], layer=chosen["layer"])
    assert edit.site == f"blocks.{chosen['layer']}.hook_resid_post" and edit.scale == pytest.approx(expected.scale)
    assert float((edit.vector - expected.vector).abs().max()) < 1e-6
    # an axis the atlas did not recover, or a layer it has no adapter for: one line, exit 2
    capsys.readouterr()
    for extra, message in ((["--axis", "3"], "axis 3 is not a recovered axis"),
                           (["--axis", "5", "--layers", "11"], "has adapters at layers 10, 20")):
        assert main(["eval", "--method", "brain-axis", "--atlas", str(tmp_path / "axes"), *extra, "--strengths",
                     "0,1", "--effect", "zipf:en", "--prompts", prompts, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
