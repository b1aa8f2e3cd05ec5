"""Adapters from smollm2's hidden states to brain-atlas axes (issue 8): held-out words beat shuffled labels."""

from __future__ import annotations

import numpy as np
import pytest

from atlases.brain import BrainAtlasSettings, build_brain_atlas
from atlases.meg_sim import simulate_meg, story_words
from atlases.words import lexicon
from probes.brain_axes import AxisAdapter, fit_adapters, word_type_states


def test_adapter_direction_is_the_gradient_of_the_score() -> None:
    rng = np.random.default_rng(0)
    a = AxisAdapter(3, "hook_resid_post", rng.normal(size=8), rng.uniform(0.5, 2, 8), rng.normal(size=(2, 8)),
                    np.zeros(2), 1.0)
    h = rng.normal(size=8)
    v = a.direction(1)
    step = a.predict((h + 1e-3 * v)[None])[0, 1] - a.predict(h[None])[0, 1]
    others = [a.predict((h + 1e-3 * u / np.linalg.norm(u))[None])[0, 1] - a.predict(h[None])[0, 1]
              for u in rng.normal(size=(20, 8))]
    assert np.isclose(np.linalg.norm(v), 1.0) and step > max(others)
    assert not np.allclose(a.direction(1, public_code=True), v)


@pytest.mark.slow
def test_smollm2_adapters_predict_recovered_axes_on_held_out_words(smollm2) -> None:
    words = story_words(3000)
    raw, w, _ = simulate_meg(words, {"frequency": lexicon(words, "frequency"),
                                     "function": lexicon(words, "function")}, seed=0)
    atlas = build_brain_atlas([raw], {None: w}, BrainAtlasSettings(n_perm=20), stability=False)
    axes = list(np.flatnonzero(atlas.recovered))
    layers = [0, 5, 10, 15, 20, 25, 29]
    report = fit_adapters(word_type_states(smollm2, words, atlas.words, layers), atlas.scores, axes=axes)
    print("\n" + report.table())
    for k, axis in enumerate(axes):
        r2 = np.array([report.r2[l][k] for l in layers])
        base = np.array([report.r2_shuffled[l][k] for l in layers])
        assert (r2 > base).mean() >= 0.5 and (r2 - base).max() > 0.2, (axis, r2, base)
    for name in ("frequency", "function"):
        axis = axes[int(np.argmax(np.abs(np.array(atlas.validation[name])[axes])))]
        k = axes.index(axis)
        assert max(report.r2[l][k] for l in layers) > 0.3, name
