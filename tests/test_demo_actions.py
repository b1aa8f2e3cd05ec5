"""The demo's actions without the browser: each tab's function does its job, and bad input is a DemoError
with a readable message (app.py shows it; the browser test checks that for the atlas tab)."""

from __future__ import annotations

import logging

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
    (lambda: A.steer(M, "Brain axis", "Hi", 4), "Upload the files of a brain-axes atlas"),
    (lambda: A.steer(M, "Brain axis", "Hi", 4, axis_atlas="/nonexistent"), "Upload the files"),  # no server paths
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


@pytest.mark.parametrize("name", ["/etc", "./models/smollm2", "~/.cache/interp/x", "HuggingFaceTB/SmolLM2-135M",
                                  "gpt2", "smollm2-135m/../../etc", "smollm2-135m\nx"])
def test_model_box_takes_only_allowlisted_names(name, monkeypatch) -> None:
    """A path or a hub id is refused with one line before anything is loaded, by every action."""
    monkeypatch.delenv("INTERP_DEMO_MODELS", raising=False)
    monkeypatch.setattr(interp, "load_model", lambda *a, **k: pytest.fail("a refused name reached load_model"))
    for call in (lambda: A.model_for(name), lambda: A.search_token(name, " dog"), lambda: A.language_neurons(name, 16),
                 lambda: A.steer(name, "ActAdd", "Hi", 4, "a", "b", 3, 1), lambda: A.hftp_spectra(name, "3", 4),
                 lambda: A.describe(name, "3:5")):
        with pytest.raises(A.DemoError, match="not offered here") as err:
            call()
        assert "\n" not in str(err.value) and "smollm2-135m" in str(err.value)  # says what is offered


def test_allowlist_and_default_model_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("INTERP_DEMO_MODELS", raising=False)
    monkeypatch.delenv("INTERP_DEMO_MODEL", raising=False)
    assert A.allowed_models() == interp.offline_names() and A.default_model() == interp.DEFAULT_MODEL
    assert A.check_model("  ") == interp.DEFAULT_MODEL and A.check_model(" gemma3-270m ") == "gemma3-270m"
    monkeypatch.setenv("INTERP_DEMO_MODELS", " gemma3-270m, ")
    assert A.allowed_models() == ["gemma3-270m"] and A.default_model() == "gemma3-270m"
    with pytest.raises(A.DemoError, match="not offered here"):
        A.check_model(M)
    monkeypatch.setenv("INTERP_DEMO_MODEL", M)  # a default outside the allowlist is the operator's mistake
    with pytest.raises(A.DemoError, match="INTERP_DEMO_MODEL"):
        A.default_model()
    monkeypatch.setenv("INTERP_DEMO_MODELS", f"gemma3-270m,{M}")
    assert A.default_model() == M


def _recipe(tmp_path, name="r.safetensors"):
    from interp.recipes import save_recipe

    edit = interp.Gate("blocks.5.mlp.hook_post", torch.zeros(1536), torch.full((1536,), 3.0), hard=True)
    return save_recipe(tmp_path / name, [edit], A.model_for(M), {"writer": "dopamine"})


def test_recipe_uploads_are_size_limited_and_validated(tmp_path, monkeypatch) -> None:
    recipe = _recipe(tmp_path)
    header, edits = A.uploaded_recipe(str(recipe), A.model_for(M))
    assert len(edits) == 1 and header["provenance"]["writer"] == "dopamine"
    data = bytearray(recipe.read_bytes())
    data[-1] ^= 0xFF  # a flipped byte in the tensors
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    (tmp_path / "junk.safetensors").write_bytes(b"not a recipe at all")
    for path, needle in ((tmp_path / "bad.safetensors", "corrupted"), (tmp_path / "junk.safetensors", "not a"),
                         (tmp_path / "none.safetensors", "missing")):
        with pytest.raises(A.DemoError, match=needle) as err:
            A.steer(M, "Recipe file (FOXP2, Dopamine, …)", "Hi", 4, recipe=str(path))
        assert str(tmp_path) not in str(err.value) and path.name in str(err.value)  # the file's name, not the path
    monkeypatch.setattr(A, "MAX_RECIPE_BYTES", recipe.stat().st_size - 1)
    with pytest.raises(A.DemoError, match="larger than"):
        A.uploaded_recipe(str(recipe), A.model_for(M))


def _atlas_files(folder, *, model=M, method="lm-head") -> list[str]:
    from atlases.neuron_atlas import Atlas

    Atlas(model=model, sites=["blocks.3.mlp.hook_post"], method=method,
          tensors={"blocks.3.mlp.hook_post/x": torch.arange(6.0)}, params={"k": 1}).save(folder)
    return sorted(str(p) for p in folder.iterdir())


def test_atlas_uploads_are_size_limited_and_validated(tmp_path, monkeypatch) -> None:
    files = _atlas_files(tmp_path / "good")
    atlas = A.uploaded_atlas(files, M)
    assert atlas.method == "lm-head" and torch.equal(atlas.tensors["blocks.3.mlp.hook_post/x"], torch.arange(6.0))
    with pytest.raises(A.DemoError, match="not a brain-axes atlas"):  # loaded and checked, then refused by kind
        A.steer(M, "Brain axis", "Hi", 4, axis_atlas=files, scale=1, axis=0)
    with pytest.raises(A.DemoError, match="made for model 'gemma3-270m'"):
        A.uploaded_atlas(_atlas_files(tmp_path / "other", model="gemma3-270m"), M)
    tensors = next(f for f in files if f.endswith(".safetensors"))
    data = bytearray(open(tensors, "rb").read())
    data[-1] ^= 0xFF
    open(tensors, "wb").write(bytes(data))
    with pytest.raises(A.DemoError, match="checksum") as err:
        A.uploaded_atlas(files, M)
    assert str(tmp_path) not in str(err.value)
    with pytest.raises(A.DemoError, match="atlas.json"):
        A.uploaded_atlas([f for f in files if not f.endswith("atlas.json")], M)
    with pytest.raises(A.DemoError, match="twice"):
        A.uploaded_atlas(files + _atlas_files(tmp_path / "again"), M)
    monkeypatch.setattr(A, "MAX_ATLAS_BYTES", 100)
    with pytest.raises(A.DemoError, match="larger than"):
        A.uploaded_atlas(_atlas_files(tmp_path / "big"), M)


def test_an_internal_error_is_one_line_for_the_user_and_a_traceback_in_the_log(caplog) -> None:
    import gradio as gr

    from app import _shown

    def broken(x):
        return {"a": 1}[x]  # a bug: KeyError with an internal detail

    with caplog.at_level(logging.ERROR, logger="demo"), pytest.raises(gr.Error) as err:
        _shown(broken)("/srv/secret-key")
    shown = err.value.message
    assert "\n" not in shown and "internal error" in shown.lower() and "secret" not in shown
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and "broken" in logged[0].getMessage()
    assert "Traceback" in caplog.text and "KeyError: '/srv/secret-key'" in caplog.text
    caplog.clear()

    def refused():
        raise A.DemoError("Enter a prompt first.\nsecond line")

    with caplog.at_level(logging.ERROR, logger="demo"), pytest.raises(gr.Error) as err:
        _shown(refused)()
    assert err.value.message == "Enter a prompt first. second line" and not caplog.records  # bad input: not a bug


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


FOXP2_PROMPTS = ("The best way to learn is", "My favourite animal is", "I think that people should",
                 "Yesterday I went to", "The weather today is", "When I was a child", "Last night I dreamed that",
                 "The most important thing in life is")


@pytest.mark.slow
def test_playground_runs_foxp2_towards_spanish(monkeypatch) -> None:
    """The FOXP2 option localises and steers English prompts into Spanish (Lingua). For time it localises a
    fixed four-layer window (the last four of the full run's 19–26) on 16 verses with 20 SAE steps (~1 min):
    8 of 8 continuations Spanish at α = 3, and 0 of 8 with a random direction of the same norm on the same
    neurons (`random_direction_edits`), so the share below is the method's, not any push's. The full
    setting is what tests/test_foxp2.py measures."""
    from interp.language_id import language_share

    monkeypatch.setattr(A, "FOXP2_VERSES", 16)
    monkeypatch.setattr(A, "FOXP2_SAE_STEPS", 20)
    runs = [A.steer(M, "FOXP2", p, 16, scale=3, target="es", foxp2_window=(23, 24, 25, 26)) for p in FOXP2_PROMPTS]
    assert all("window [23, 24, 25, 26]" in r.note for r in runs)
    assert language_share([r.unsteered for r in runs], "es", ["en", "es"]) == 0.0
    assert language_share([r.steered for r in runs], "es", ["en", "es"]) >= 0.75, [r.steered for r in runs]


@pytest.mark.slow
def test_language_hftp_and_milan_tabs(small_captioner, monkeypatch) -> None:
    from probes.milan.captioner import TrainedDescriber, load_captioner

    monkeypatch.setattr(A, "_describer", lambda name, window: TrainedDescriber(load_captioner(small_captioner)))
    png, rows = A.language_neurons(M, 16)
    assert png.startswith(b"\x89PNG") and {r[0] for r in rows} == set(A.LANGS) and all(r[1] > 0 for r in rows)
    r = A.steer_language(M, 16, "es", "The best way to learn is", 12)
    assert r.steered != r.unsteered and "es neurons" in r.note
    png, table = A.hftp_spectra(M, "6", 4)
    assert png.startswith(b"\x89PNG") and "blocks.6.mlp.hook_post" in table
    text, exemplars = A.describe(M, "3:5")
    assert text.strip() and "PMI" in text and exemplars and all("[[" in e[0] for e in exemplars)


@pytest.mark.slow  # a subprocess importing gradio and torch: 5-20 s
def test_app_refuses_to_start_with_a_default_model_outside_the_allowlist() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "INTERP_DEMO_MODELS": M, "INTERP_DEMO_MODEL": "HuggingFaceTB/SmolLM2-360M",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run([sys.executable, str(root / "app.py"), "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "INTERP_DEMO_MODEL='HuggingFaceTB/SmolLM2-360M' is not in INTERP_DEMO_MODELS" in proc.stderr
