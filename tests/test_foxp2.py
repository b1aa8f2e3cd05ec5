"""Neural FOXP2 end to end (issue 6): localise, choose the window, steer, and the evaluation table.

The slow tests run the whole method on smollm2-135m (Spanish, French) and on gemma3-270m
(Hindi, where installed) and print the table: strength, target share, perplexity, with the
ablations (positive only, negative only, random direction of the same norm, ActAdd).
"""

from __future__ import annotations

import json

import pytest
import torch

import interp
from probes.foxp2 import Foxp2Analysis, Foxp2Settings, LayerFindings, analyze
from probes.language_directions import spectrum
from steering.foxp2 import (Foxp2Layer, calibrate_strength, foxp2_edits, foxp2_table, random_direction_edits,
                            window_from_analysis)
from steering.language_eval import distinct2
from steering.neutral_prompts import CALIBRATION, NEUTRAL

W = 16


def _layer(seed=0) -> Foxp2Layer:
    g = torch.Generator().manual_seed(seed)
    return Foxp2Layer(layer=2, directions=torch.randn(1, W, generator=g), mean_diff=torch.randn(W, generator=g),
                      target_neurons=[1, 4, 9], english_neurons=[3], english_directions=torch.randn(1, W, generator=g))


def test_random_direction_control_has_the_same_norm_and_neurons() -> None:
    w = _layer()
    real = foxp2_edits([w], alpha=2.0)[0].vector
    rand = random_direction_edits([w], alpha=2.0, seed=1)
    assert [type(e).__name__ for e in rand] == ["Add", "Ablate"]
    v = rand[0].vector
    assert torch.isclose(v.norm(), real.norm()) and set(v.nonzero().flatten().tolist()) == {1, 4, 9}
    assert abs(float(torch.nn.functional.cosine_similarity(v, real, dim=0))) < 0.99
    assert torch.equal(rand[1].directions, foxp2_edits([w], positive=False)[0].directions)


def test_distinct2_counts_repeated_word_pairs() -> None:
    assert distinct2(["a b c d"]) == 1.0
    assert distinct2(["la la la la la"]) == 0.25  # four pairs, one distinct
    assert distinct2([""]) == 1.0


def test_window_from_analysis_uses_the_localised_layers() -> None:
    g = torch.Generator().manual_seed(0)
    spectra = {l: spectrum(torch.randn(12, W, generator=g) + 3.0) for l in range(4)}
    found = {l: LayerFindings(l, 0.8, 100, [1], [0.9], [2], [-0.9], [l, l + 1], [l + 5]) for l in (1, 2)}
    an = Foxp2Analysis("es", Foxp2Settings(), spectra, {l: 0.9 for l in range(4)}, [1, 2], found)
    window = window_from_analysis(an)
    assert [w.layer for w in window] == [1, 2] and window[1].target_neurons == [2, 3]
    assert torch.equal(window[0].english_directions, -spectra[1].mean_diff[None])
    json.dumps(an.summary())  # JSON-ready
    assert "*" in an.table().splitlines()[2]  # layer 1 is marked as a window layer


def test_calibration_prompts_are_apart_from_the_test_prompts() -> None:
    assert not set(CALIBRATION) & set(NEUTRAL["en"]) and len(CALIBRATION) == len(set(CALIBRATION)) == 16
    assert all(len(NEUTRAL[l]) == len(NEUTRAL["en"]) for l in NEUTRAL)


# ---------------------------------------------------------------- slow: the method on real models
def _run(model, target: str, ablations: bool = True):
    from probes.language_counts import bible_texts

    texts = bible_texts(["en", target], limit=96)
    # 100 SAE steps at 3× the default rate: the same explained variance as 300 steps, at a third of the time
    analysis = analyze(model, texts, Foxp2Settings(target=target, sae_steps=100, sae_lr=3e-3))
    window = window_from_analysis(analysis)
    calibration = CALIBRATION  # English prompts kept apart from the test prompts
    cands = ("en", "es", "fr", "de", target)
    alpha, sweep = calibrate_strength(model, window, target, calibration, candidates=cands)
    table = foxp2_table(model, window, target, texts, alpha=alpha, candidates=cands, ablations=ablations,
                        actadd_scales=(1.0, 2.0))  # ActAdd at 0.5 switches nothing (6 %): two rows suffice
    print(f"\n{model.name} → {target}: window {analysis.window}, calibrated α = {alpha:g} (sweep {sweep})")
    print(analysis.table())
    print(table.text())
    return analysis, window, alpha, table


def _check(analysis, alpha, table, ablations: bool = True) -> None:
    for f in analysis.layers.values():  # the SAE's reconstruction quality is reported and real
        assert 0.5 < f.explained_variance < 1.0 and f.target_neurons and f.english_neurons
    row = next(r for r in table.rows if r.name == "FOXP2" and r.strength == alpha)
    assert table.unsteered.share <= 0.1
    assert row.share >= 0.8, table.text()
    # fluency: against the model's own continuations in the target language, scored the same way
    assert table.matched_ratio(row) < 1.5, table.text()
    assert row.distinct2 >= 0.7, table.text()  # not a degenerate loop
    if not ablations:
        return
    names = {r.name for r in table.rows}
    assert {"positive shift only", "negative shift only", "random direction, same norm"} <= names
    assert any(n.startswith("ActAdd") for n in names)
    neg = next(r for r in table.rows if r.name == "negative shift only")
    assert neg.share < row.share  # the compensating shift alone does not switch language


@pytest.mark.slow
def test_foxp2_makes_smollm2_answer_in_spanish_and_the_recipe_round_trips(smollm2, tmp_path) -> None:
    from interp.recipes import load_recipe, save_recipe

    analysis, window, alpha, table = _run(smollm2, "es")
    _check(analysis, alpha, table)
    edits = foxp2_edits(window, alpha=alpha)
    path = save_recipe(tmp_path / "es.safetensors", edits, smollm2, {"writer": "steering.foxp2", "alpha": alpha})
    loaded = load_recipe(path, smollm2)
    prompts = ["The best way to learn is", "My favourite food is"]
    assert interp.generate(smollm2, prompts, loaded, max_new_tokens=12) == \
        interp.generate(smollm2, prompts, edits, max_new_tokens=12)


@pytest.mark.slow
def test_foxp2_makes_smollm2_answer_in_french(smollm2) -> None:
    """The same method for French; the ablation rows are shown once, for Spanish (they cost ~2 min)."""
    analysis, _, alpha, table = _run(smollm2, "fr", ablations=False)
    _check(analysis, alpha, table, ablations=False)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not reached yet (issue 6 stays open): gemma3-270m's auto window 12-15 does not "
                   "switch to Hindi (12 % at α = 3); tracing 16 features × 8 neurons, window 8-14 reaches 94-100 % "
                   "Hindi at α 2-4, but at 8-11× the matched perplexity (Devanagari fragments and punctuation)")
def test_foxp2_makes_gemma3_answer_in_hindi() -> None:
    from interp.models import OFFLINE_MODELS, _package_dir

    if _package_dir(OFFLINE_MODELS["gemma3-270m"].package.replace("-", "_")) is None:
        pytest.skip("gemma3-270m is not installed (make install-gemma)")
    model = interp.load_model("gemma3-270m")
    analysis, _, alpha, table = _run(model, "hi")
    _check(analysis, alpha, table)
