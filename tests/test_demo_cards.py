"""The demo's "Neuron cards" tab without the browser (issue 29): its card index (the LM-head atlas of the demo
layers joined with the demo corpus's statistics) finds the atlas's top neuron for a token, a card opens with its
exemplars highlighted, clamp / scale / ablate change the text, and the recipe that "Add to recipe" writes makes
`interp steer --recipe` print the steered text the tab showed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo import actions as A

M = "smollm2-135m"
ROOT = Path(__file__).resolve().parents[1]
PROMPT = "My favourite animal is"


@pytest.fixture(autouse=True)
def _small_atlas(monkeypatch):
    monkeypatch.setenv("INTERP_DEMO_LAYERS", "28-29")


@pytest.mark.parametrize("call,needle", [
    (lambda: A.search_cards(M, "token", " "), "Enter a token"),
    (lambda: A.search_cards(M, "colour", "red"), "Search by one of"),
    (lambda: A.search_cards(M, "token", " dog", layer="-1"), "layer number"),
    (lambda: A.search_cards("/etc", "token", " dog"), "not offered here"),
    (lambda: A.open_card(M, "28-3"), "LAYER:NEURON"),
    (lambda: A.neuron_generate(M, PROMPT, "29:5", "clamp", 1e9, 4), "Clamp value"),
    (lambda: A.neuron_generate(M, PROMPT, "29:5", "scale", "x", 4), "Scale factor"),
    (lambda: A.neuron_generate(M, PROMPT, "29:5", "shout", 1, 4), "Choose what to do"),
    (lambda: A.neuron_generate(M, " ", "29:5", "clamp", 1, 4), "Enter a prompt"),
    (lambda: A.add_to_recipe(M, None, "29:5", "scale", 1e9), "Scale factor"),
    (lambda: A.add_to_recipe(M, {"model": "gemma3-270m", "edits": [[3, 1, "clamp", 2.0]]}, "29:5", "clamp", 1),
     "clear it"),
    (lambda: A.recipe_generate(M, PROMPT, None, 4), "recipe is empty"),
])
def test_bad_input_is_a_readable_demo_error(call, needle) -> None:
    with pytest.raises(A.DemoError, match=needle):
        call()


def test_a_card_is_html_with_its_values_escaped() -> None:
    from atlases.cards import NeuronCard

    card = NeuronCard(3, 7, frequency={"en": 0.5}, mean={"en": 0.1}, std={"en": 0.2},
                      exemplars=[{"doc": 0, "pos": 1, "value": 2.0, "text": "a <b>", "context": ("a ", "<b>", "")}],
                      tokens={"write": [("<script>", 0.5)]}, description="x & y", pmi=1.0)
    html = A.card_html(card)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<mark><b>&lt;b&gt;</b></mark>" in html
    assert "Neuron 3:7" in html and "x &amp; y" in html and "0.5000" in html


@pytest.mark.slow  # the LM-head atlas and the statistics of two layers: ~1 min on a CPU, then cached
def test_search_opens_the_atlas_top_neuron_and_its_edits_steer() -> None:
    from atlases.lm_head import neurons_for

    top = neurons_for(A.atlas_for(M), " dog", k=1)[0]
    rows = A.search_cards(M, "token", " dog")
    assert rows[0][0] == f"{top.layer}:{top.neuron}" and "dog" in rows[0][1].lower()
    assert A.search_cards(M, "token", " dog", layer=top.layer)[0][0] == rows[0][0]
    with pytest.raises(A.DemoError, match="no layer 3"):
        A.search_cards(M, "token", " dog", layer=" 3 ")
    with pytest.raises(A.DemoError, match="no language-neurons atlas.*Upload"):
        A.search_cards(M, "language", "es")
    card = A.open_card(M, rows[0][0])
    assert card.frequency and len(card.exemplars) == A.CARD_EXEMPLARS and "context" in card.exemplars[0]
    assert any("dog" in t.lower() for t, _ in card.tokens["write"])
    assert "<mark>" in A.card_html(card)
    runs = {a: A.neuron_generate(M, PROMPT, rows[0][0], a, v, 8) for a, v in
            (("clamp", 20), ("scale", -5), ("ablate", None))}
    assert all(r.unsteered == runs["clamp"].unsteered for r in runs.values())
    assert runs["clamp"].steered != runs["clamp"].unsteered and "clamp" in runs["clamp"].note
    assert runs["scale"].steered != runs["scale"].unsteered
    assert "ablate" in runs["ablate"].note


@pytest.mark.slow  # the index (shared with the test above), two generations and `interp steer` in a subprocess
def test_the_downloaded_recipe_steers_the_cli_as_the_tab_did(tmp_path) -> None:
    from interp.recipes import read_recipe

    neuron = A.search_cards(M, "token", " dog")[0][0]
    shown = A.neuron_generate(M, PROMPT, neuron, "clamp", 20, 8)
    recipe, path, summary = A.add_to_recipe(M, None, "29:5", "scale", 3)
    recipe, path, summary = A.add_to_recipe(M, recipe, "29:5", "ablate", None)  # replaces 29:5's edit
    recipe, path, summary = A.add_to_recipe(M, recipe, neuron, "clamp", 20)
    assert recipe["edits"] == [[29, 5, "ablate", None], [*map(int, neuron.split(":")), "clamp", 20.0]]
    assert "2 edit(s)" in summary and "--recipe" in summary
    header, edits = read_recipe(path)
    assert [e.kind for e in edits] == ["ablate", "clamp"] and header["provenance"]["writer"].startswith("interp demo")
    recipe, path, _ = A.add_to_recipe(M, None, neuron, "clamp", 20)  # a fresh recipe: the one edit shown above
    env = {**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "cli.main", "steer", "--model", M, "--recipe", path, "--prompt",
                          PROMPT, "--max-new-tokens", "8", "--repetition-penalty", "1.3"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = out.stdout.split(f"] {PROMPT}\n", 1)[1]
    assert " ".join(printed.split()) == " ".join(shown.steered.split()) and shown.steered != shown.unsteered
    both = A.recipe_generate(M, PROMPT, recipe, 8)
    assert both.steered == shown.steered and both.unsteered == shown.unsteered


def _hftp_files(folder, model=M) -> list[str]:
    import torch

    from atlases import Atlas

    t = {}
    for layer in (28, 29):
        s = f"blocks.{layer}.mlp.hook_post"
        t[f"{s}/label"] = torch.zeros(1536, dtype=torch.int8)
        t[f"{s}/label"][[7, 11]] = 3  # shared
        t[f"{s}/z.sentence"], t[f"{s}/z.phrase"] = torch.zeros(1536), torch.zeros(1536)
    Atlas(model, ["blocks.28.mlp.hook_post", "blocks.29.mlp.hook_post"], "hftp", t, {}).save(folder)
    return sorted(str(p) for p in folder.iterdir())


@pytest.mark.slow  # joins the upload with the demo's index (shared with the tests above)
def test_an_uploaded_atlas_joins_the_index_and_an_uploaded_index_is_used_as_it_is(tmp_path) -> None:
    from atlases.cards import merge_atlases

    files = _hftp_files(tmp_path / "hftp")
    rows = A.search_cards(M, "label", "shared", uploads=files)
    assert [r[0] for r in rows] == ["28:7", "28:11", "29:7", "29:11"] and all(r[2] == "shared" for r in rows)
    card = A.open_card(M, "29:808", files)
    assert card.hftp == "" and card.frequency and card.tokens  # the demo's fields are still there
    assert "<h4>HFTP</h4>" in A.card_html(card)
    index = merge_atlases(tmp_path / "index", [tmp_path / "hftp"])  # an index of HFTP labels only
    only = sorted(str(p) for p in index.iterdir())
    assert A.search_cards(M, "label", "shared", layer="29", uploads=only) == [["29:7", "", "shared", ""],
                                                                              ["29:11", "", "shared", ""]]
    assert not A.open_card(M, "29:808", only).tokens
    with pytest.raises(A.DemoError, match="made for model 'gemma3-270m'"):
        A.search_cards(M, "label", "shared", uploads=_hftp_files(tmp_path / "other", "gemma3-270m"))
    with pytest.raises(A.DemoError, match="no hftp atlas merged in"):
        A.search_cards(M, "label", "shared")  # the upload did not change the demo's own index
