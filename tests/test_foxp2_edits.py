"""FOXP2 edits (step 3) against the formula written out by hand."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.engine import FusedSite, PositionState, apply_reference
from steering.foxp2 import Foxp2Layer, foxp2_edits

W = 16


def layer(seed=0) -> Foxp2Layer:
    g = torch.Generator().manual_seed(seed)
    return Foxp2Layer(layer=3, directions=torch.randn(2, W, generator=g), mean_diff=torch.randn(W, generator=g),
                      target_neurons=[1, 2, 5], english_neurons=[7, 8], english_directions=torch.randn(1, W, generator=g))


def test_edits_apply_the_formula() -> None:
    w = layer()
    x = torch.randn(2, 4, W, generator=torch.Generator().manual_seed(1))
    q, _ = torch.linalg.qr(w.directions.T)
    shift = q @ (q.T @ w.mean_diff)
    e = w.english_directions[0] / w.english_directions[0].norm()
    want = x.clone()
    want[..., [1, 2, 5]] += 2.0 * shift[[1, 2, 5]]
    want[..., [7, 8]] -= 0.5 * (x @ e)[..., None] * e[[7, 8]]
    edits = foxp2_edits([w], alpha=2.0, beta=0.5)
    assert [type(x).__name__ for x in edits] == ["Add", "Ablate"] and edits[0].site == "blocks.3.mlp.hook_post"
    torch.testing.assert_close(apply_reference(edits, x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(FusedSite.build(edits, W)(x, PositionState()), want, rtol=1e-5, atol=1e-5)


def test_parts_switch_off_for_ablations() -> None:
    w = layer()
    assert [type(x).__name__ for x in foxp2_edits([w], positive=False)] == ["Ablate"]
    assert [type(x).__name__ for x in foxp2_edits([w], negative=False)] == ["Add"]
    with pytest.raises(interp.EditError, match="neither"):
        foxp2_edits([w], positive=False, negative=False)
    with pytest.raises(interp.EditError, match="window"):
        foxp2_edits([])


@pytest.mark.slow
def test_foxp2_with_language_neuron_sets_moves_smollm2_towards_spanish(smollm2, smollm2_language_counts) -> None:
    """The other source of neuron sets: language-specific neurons (Zhang et al. 2025) as N_T / N_EN instead
    of the SAE localisation of tests/test_foxp2.py; the share of Spanish continuations still rises."""
    from interp.language_id import language_share
    from probes.language_counts import bible_texts
    from probes.language_directions import difference_matrices, spectrum
    from probes.language_neurons import identify
    from steering.foxp2 import window_from_neuron_sets

    langs = ["en", "es", "fr", "de"]
    counts, _ = smollm2_language_counts  # en, es, fr, de on 150 verses
    neurons = identify(counts)
    es, en = neurons.neurons("es"), neurons.neurons("en")
    pairs = bible_texts(["en", "es"], limit=64, offset=200)
    D = difference_matrices(smollm2, pairs["es"], pairs["en"], layers=sorted(es))
    window = window_from_neuron_sets({l: spectrum(D[l]) for l in D}, es, en)
    prompts = ["The weather today is", "My favourite food is", "In the morning I usually", "The history of the city",
               "Yesterday my friend told me", "The best way to learn is", "When I was a child", "This book is about"]
    plain = language_share(interp.generate(smollm2, prompts, max_new_tokens=24), "es", langs)
    both = language_share(interp.generate(smollm2, prompts, foxp2_edits(window, alpha=4.0), max_new_tokens=24),
                          "es", langs)
    print(f"\nSpanish share: unsteered {plain:.2f}, FOXP2 (α = 4, β = 1, {len(window)} layers) {both:.2f}")
    assert both >= plain + 0.5
