"""Neural FOXP2 end to end (issue 6): localise, choose the window, steer, and the evaluation table.

The slow test runs the whole method on smollm2-135m towards Spanish at test size and prints the table
(strength, target share, perplexity, the negative-only and random-direction controls). The full-size
runs, Spanish and French with every ablation and ActAdd, are `benchmarks/foxp2.py`.
"""

from __future__ import annotations

import json

import pytest
import torch

import interp
from probes.foxp2 import Foxp2Analysis, Foxp2Settings, LayerFindings, analyze
from probes.language_directions import spectrum
from steering.foxp2 import (Foxp2Layer, calibrate_strength, foxp2_edits, random_direction_edits,
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


# ---------------------------------------------------------------- slow: the method on smollm2, at test size
# The full-size runs (96 verses, SAEs at 4× expansion for 100 steps, the whole calibration sweep, Spanish and
# French, every ablation and ActAdd) are `benchmarks/foxp2.py`; Hindi on gemma3-270m, a negative result, is
# `benchmarks/foxp2_hindi.py`. Here: half the verses, SAEs at 2× for 60 steps, calibration on 8 prompts.
TEST_SIZE = dict(verses=48, sae_steps=60, sae_expansion=2, calibration=8, strengths=(1.0, 1.5, 2.0))


@pytest.mark.slow
def test_foxp2_makes_smollm2_answer_in_spanish_and_the_recipe_round_trips(smollm2, tmp_path) -> None:
    """The automatic window, localisation, calibrated α and the held-out table: FOXP2 switches ≥ 80 % of the 16
    held-out continuations to Spanish at under 1.5 × the matched perplexity, while its negative shift alone and
    a random direction of the same norm on the same neurons switch far fewer; the recipe round-trips.
    Measured at this size: window 19–26, α 1.5, share 1.00, 1.03 × matched; negative only 0.00, random 0.12."""
    from interp.recipes import load_recipe, save_recipe
    from probes.language_counts import bible_texts
    from steering.language_eval import evaluate

    s = TEST_SIZE
    texts = bible_texts(["en", "es"], limit=s["verses"])
    analysis = analyze(smollm2, texts, Foxp2Settings(target="es", sae_steps=s["sae_steps"], sae_lr=3e-3,
                                                     sae_expansion=s["sae_expansion"]))
    window = window_from_analysis(analysis)
    cands = ("en", "es", "fr", "de")
    alpha, sweep = calibrate_strength(smollm2, window, "es", CALIBRATION[:s["calibration"]], candidates=cands,
                                      strengths=s["strengths"])
    variants = [("FOXP2", alpha, foxp2_edits(window, alpha=alpha)),
                ("negative shift only", alpha, foxp2_edits(window, alpha=alpha, positive=False)),
                ("random direction, same norm", alpha, random_direction_edits(window, alpha=alpha))]
    table = evaluate(smollm2, variants, "es", NEUTRAL["en"], NEUTRAL["es"], candidates=cands)
    print(f"\nwindow {analysis.window}, calibrated α = {alpha:g} (sweep {sweep})\n{analysis.table()}\n{table.text()}")
    assert analysis.window == list(range(analysis.window[0], analysis.window[0] + 8))  # a quarter of 30 layers
    for f in analysis.layers.values():  # the SAE's reconstruction quality is reported and real
        assert 0.5 < f.explained_variance < 1.0 and f.target_neurons and f.english_neurons
    row, neg, rand = table.rows
    assert sweep[-1][0] == alpha and sweep[-1][1] >= 0.9  # the least α whose calibration share reaches 0.9
    assert table.unsteered.share <= 0.1
    assert row.share >= 0.8, table.text()
    assert table.matched_ratio(row) < 1.5, table.text()  # fluency: against the model's own Spanish, scored alike
    assert row.distinct2 >= 0.7, table.text()  # not a degenerate loop
    assert neg.share <= row.share - 0.5 and rand.share <= row.share - 0.5, table.text()  # the target direction works
    edits = foxp2_edits(window, alpha=alpha)
    path = save_recipe(tmp_path / "es.safetensors", edits, smollm2, {"writer": "steering.foxp2", "alpha": alpha})
    loaded = load_recipe(path, smollm2)
    prompts = ["The best way to learn is", "My favourite food is"]
    assert interp.generate(smollm2, prompts, loaded, max_new_tokens=12) == \
        interp.generate(smollm2, prompts, edits, max_new_tokens=12)
