"""`interp eval` (issue 31): a sweep of an ActAdd contrast and of a recipe's strength on smollm2 writes the table,
the plots and a recommended recipe that is the recommended setting's edits; bad input exits 2 in one line."""

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
    (["--strengths", "1", "--effect", "colour:red"], "the kind is language, token or mention"),
])
def test_bad_input_exits_2_in_one_line(tmp_path, capsys, extra, message):
    (tmp_path / "p.txt").write_text("a\n")
    argv = ["eval", "--contrast", str(tmp_path / "p.txt"), str(tmp_path / "p.txt"), *extra, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


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
