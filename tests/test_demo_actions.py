"""The demo's actions without the browser: each tab's function does its job, and bad input is a DemoError
with a readable message (app.py shows it; the browser test checks that for the atlas tab)."""

from __future__ import annotations

import pytest
import torch

import interp
from demo import actions as A

M = "smollm2-135m"


@pytest.fixture(autouse=True)
def _small_atlas(monkeypatch):
    monkeypatch.setenv("INTERP_DEMO_LAYERS", "28-29")


@pytest.mark.parametrize("call,needle", [
    (lambda: A.check_prompt("   "), "Enter a prompt"),
    (lambda: A.check_prompt("x" * (A.MAX_PROMPT_CHARS + 1)), "at most"),
    (lambda: A.check_number("big", "Scale", 5), "must be a number"),
    (lambda: A.check_number(float("inf"), "Scale", 5), "between -5 and 5"),
    (lambda: A.check_number(6, "Scale", 5), "between -5 and 5"),
    (lambda: A.check_tokens(0), "between 1 and"),
    (lambda: A.parse_neuron("12-3", A.model_for(M)), "LAYER:NEURON"),
    (lambda: A.parse_neuron("30:1", A.model_for(M)), "outside this model"),
    (lambda: A.search_token(M, " "), "Enter a token"),
    (lambda: A.steer(M, "ActAdd", "Hi", 4, "", "bad", 3, 1), "positive and one negative"),
    (lambda: A.steer(M, "Recipe file (FOXP2, Dopamine, …)", "Hi", 4), "Upload a recipe"),
    (lambda: A.steer(M, "Brain axis", "Hi", 4, axis_atlas="/nonexistent"), "brain-axes atlas"),
    (lambda: A.steer(M, "nope", "Hi", 4), "Choose a method"),
    (lambda: A.steer(M, "FOXP2", "Hi", 4, target="en"), "target language"),
    (lambda: A.steer(M, "FOXP2", "Hi", 4, scale=1e6), "Strength"),
    (lambda: A.hftp_spectra(M, "0-29", 4), "at most 6 layers"),
    (lambda: A.hftp_spectra(M, "3", 5), "even number"),
    (lambda: A.language_neurons(M, 4), "at least 16"),
])
def test_bad_input_is_a_readable_demo_error(call, needle) -> None:
    with pytest.raises(A.DemoError, match=needle):
        call()


@pytest.mark.slow
def test_playground_steers_with_actadd_and_a_recipe(tmp_path) -> None:
    from interp.recipes import save_recipe

    r = A.steer(M, "ActAdd", "I think that people should", 12, "I love this. Wonderful!", "I hate this. Awful!", 6,
                8)
    assert r.unsteered and r.steered and r.unsteered != r.steered and "ActAdd 8" in r.note
    model = A.model_for(M)
    path = save_recipe(tmp_path / "r.safetensors", [interp.Gate("blocks.5.mlp.hook_post", torch.zeros(1536),
                                                                torch.full((1536,), 3.0), hard=True)], model,
                       {"writer": "dopamine"})
    r = A.steer(M, "Recipe file (FOXP2, Dopamine, …)", "I think that people should", 12, recipe=str(path))
    assert r.steered != r.unsteered and "dopamine" in r.note
    assert r.unsteered == interp.generate(model, ["I think that people should"], [], max_new_tokens=12,
                                          **A.GENERATION)[0]  # the model was restored


@pytest.mark.slow
def test_playground_runs_foxp2_towards_spanish(monkeypatch) -> None:
    """The FOXP2 option localises (here on a fixed two-layer window, few verses and SAE steps, for time)
    and steers; the full setting is what the FOXP2 tests measure."""
    monkeypatch.setattr(A, "FOXP2_VERSES", 24)
    monkeypatch.setattr(A, "FOXP2_SAE_STEPS", 20)
    from interp.language_id import language_share

    r = A.steer(M, "FOXP2", "The best way to learn is", 16, scale=3, target="es", foxp2_window=(19, 20, 21, 22))
    assert r.steered != r.unsteered and "window [19, 20, 21, 22]" in r.note
    assert language_share([r.unsteered], "en", ["en", "es"]) == 1.0


@pytest.mark.slow
def test_language_hftp_and_milan_tabs() -> None:
    png, rows = A.language_neurons(M, 16)
    assert png.startswith(b"\x89PNG") and {r[0] for r in rows} == set(A.LANGS) and all(r[1] > 0 for r in rows)
    r = A.steer_language(M, 16, "es", "The best way to learn is", 12)
    assert r.steered != r.unsteered and "es neurons" in r.note
    png, table = A.hftp_spectra(M, "6", 4)
    assert png.startswith(b"\x89PNG") and "blocks.6.mlp.hook_post" in table
    text, exemplars = A.describe(M, "3:5")
    assert text.strip() and "PMI" in text and exemplars and all("[[" in e[0] for e in exemplars)
