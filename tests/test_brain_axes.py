"""Adapters from smollm2's hidden states to brain-atlas axes, and steering along them (issue 8)."""

from __future__ import annotations

import numpy as np
import pytest

from atlases.brain import BrainAtlasSettings, build_brain_atlas
from atlases.meg_sim import simulate_meg, story_words
from atlases.words import lexicon
from probes.brain_axes import AxisAdapter, fit_adapters, word_type_states

LAYERS = [0, 5, 10, 15, 20, 25, 29]


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


def test_text_metrics_separate_common_from_rare_words() -> None:
    from steering.axes import text_metrics

    common, rare = text_metrics("the man went to the house"), text_metrics("quixotic lexicographers peruse palimpsests")
    assert common[0] > rare[0] + 2 and common[1] > rare[1]


@pytest.fixture(scope="module")
def built(smollm2):
    words = story_words(3000)
    raw, w, _ = simulate_meg(words, {"frequency": lexicon(words, "frequency"),
                                     "function": lexicon(words, "function")}, seed=0)
    atlas = build_brain_atlas([raw], {None: w}, BrainAtlasSettings(n_perm=20), stability=False)
    axes = list(np.flatnonzero(atlas.recovered))
    return atlas, axes, word_type_states(smollm2, words, atlas.words, LAYERS)


@pytest.mark.slow
def test_smollm2_adapters_predict_recovered_axes_on_held_out_words(built) -> None:
    atlas, axes, states = built
    report = fit_adapters(states, atlas.scores, axes=axes)
    print("\n" + report.table())
    for k, axis in enumerate(axes):
        r2 = np.array([report.r2[l][k] for l in LAYERS])
        base = np.array([report.r2_shuffled[l][k] for l in LAYERS])
        assert (r2 > base).mean() >= 0.5 and (r2 - base).max() > 0.2, (axis, r2, base)
    for name in ("frequency", "function"):
        k = int(np.argmax(np.abs(np.array(atlas.validation[name])[axes])))
        assert max(report.r2[l][k] for l in LAYERS) > 0.3, name


@pytest.mark.slow
def test_steering_along_the_frequency_axis_shifts_word_frequency_in_the_sign_of_the_strength(smollm2, built) -> None:
    from steering.actadd import contrast_direction
    from steering.axes import COMMON_WORDS, RARE_WORDS, evaluate_axis
    from steering.neutral_prompts import NEUTRAL

    atlas, axes, states = built
    layer = 15
    r = np.array(atlas.validation["frequency"])[axes]
    k = int(np.argmax(np.abs(r)))
    sign = float(np.sign(r[k]))  # orient the axis so that + means more frequent words
    adapter = fit_adapters({layer: states[layer]}, atlas.scores, axes=axes).adapters[layer]
    actadd = contrast_direction(smollm2, COMMON_WORDS, RARE_WORDS, f"blocks.{layer}.hook_resid_post",
                                skip_first=True).vector.numpy()
    # the text-probe comparison runs in the README's measurement; here the axis and ActAdd (suite time)
    directions = {"brain axis": sign * adapter.direction(k), "actadd": actadd}
    table = evaluate_axis(smollm2, directions, adapter, k, layer, NEUTRAL["en"][:8], strengths=(-2.0, 0.0, 2.0),
                          sign=sign)
    print("\n" + table.text())
    means = {s: table.means("brain axis", s)["log_freq"] for s in (-2.0, 0.0, 2.0)}
    assert means[-2.0] < means[0.0] < means[2.0], means
    c = next(c for c in table.contrasts if c.method == "brain axis" and c.metric == "log_freq")
    assert c.d > 0 and c.p < 0.05
    assert c.matched_pairs >= 8 and c.matched_diff > 0  # not just a side effect of perplexity


# ----------------------------------------------------------------------------- issue 30: the paper's knobs


def test_public_code_direction_differs_from_the_gradient_only_when_the_scale_is_not_constant() -> None:
    rng = np.random.default_rng(1)
    coef = rng.normal(size=(2, 6))
    flat = AxisAdapter(3, "hook_resid_post", np.zeros(6), np.full(6, 2.5), coef, np.zeros(2), 1.0)
    assert np.allclose(flat.direction(0, public_code=True), flat.direction(0))
    varied = AxisAdapter(3, "hook_resid_post", np.zeros(6), rng.uniform(0.2, 5, 6), coef, np.zeros(2), 1.0)
    pub, ours = varied.direction(0, public_code=True), varied.direction(0)
    assert np.isclose(np.linalg.norm(pub), 1) and abs(pub @ ours) < 0.999
    assert np.allclose(pub, coef[0] * varied.scale / np.linalg.norm(coef[0] * varied.scale))


def _fake_axes_atlas(model, layers, seed=0):
    """A brain-axes atlas with random adapters at `layers` for `model` (axes 2 and 5 recovered)."""
    from atlases import Atlas
    from probes.brain_axes import AdapterReport, adapter_params, adapter_tensors

    rng = np.random.default_rng(seed)
    d = model.adapter.d_model
    adapters = {l: AxisAdapter(l, "hook_resid_post", rng.normal(size=d), rng.uniform(0.1, 3, d),
                               rng.normal(size=(2, d)), np.zeros(2), 10.0) for l in layers}
    report = AdapterReport(adapters, {l: np.array([0.3 + 0.01 * l, 0.2]) for l in layers},
                           {l: np.zeros(2) for l in layers}, 80, 20, [2, 5])
    return Atlas(model=model.name, sites=["meg"], method="brain-axes", tensors=adapter_tensors(report),
                 params={"adapters": adapter_params(report, model.name)}), adapters


def test_raw_strength_adds_exactly_s_times_the_unit_direction_and_paper_settings_change_the_edit(smollm2) -> None:
    import torch

    from interp.engine import apply_reference
    from steering.axes import AxisSteerSettings, atlas_axis_edits

    last = smollm2.adapter.n_layers - 1
    atlas, adapters = _fake_axes_atlas(smollm2, [10, last])
    prompts = ["Once upon a time"]
    raw = AxisSteerSettings(raw_strength=True)
    (edit,), note = atlas_axis_edits(smollm2, atlas, 5, 1.5, prompts, layer=10, settings=raw)
    v = torch.tensor(adapters[10].direction(1), dtype=torch.float32)
    x = torch.randn(1, 4, smollm2.adapter.d_model)
    assert edit.site == "blocks.10.hook_resid_post" and "raw units" in note
    assert torch.allclose(apply_reference([edit], x) - x, 1.5 * v, atol=1e-5)
    # ours: strength in units of the residual norm, the gradient direction, the steering layer's adapter
    (ours,), _ = atlas_axis_edits(smollm2, atlas, 5, 1.5, prompts, layer=10)
    assert torch.allclose(ours.vector, v, atol=1e-6) and ours.scale > 10 * 1.5
    # the paper: raw units, coef × scale, the last layer's adapter (added at the steering layer)
    (paper,), note = atlas_axis_edits(smollm2, atlas, 5, 1.5, prompts, layer=10, settings=AxisSteerSettings.paper())
    expected = torch.tensor(adapters[last].direction(1, public_code=True), dtype=torch.float32)
    assert paper.site == "blocks.10.hook_resid_post" and paper.scale == 1.5
    assert torch.allclose(paper.vector, expected, atol=1e-6) and f"layer-{last} adapter" in note
    with pytest.raises(Exception, match="no adapter at the last layer"):
        atlas_axis_edits(smollm2, _fake_axes_atlas(smollm2, [10])[0], 5, 1.0, prompts,
                         settings=AxisSteerSettings(adapter="last"))


def test_steer_brain_axis_paper_run_records_paper_mode_and_steers_differently(smollm2, tmp_path, capsys) -> None:
    import json

    from cli.main import main

    atlas, _ = _fake_axes_atlas(smollm2, [10, smollm2.adapter.n_layers - 1])
    atlas.save(tmp_path / "axes")
    common = ["steer", "brain-axis", "--atlas", str(tmp_path / "axes"), "--axis", "5", "--layer", "10",
              "--strength", "2", "--prompt", "Once upon a time", "--max-new-tokens", "4"]
    runs = {}
    for name, extra in (("ours", []), ("paper", ["--paper"])):
        assert main(common + extra) == 0
        out = capsys.readouterr().out
        runs[name] = (json.loads(out.split("# paper_mode: ", 1)[1].splitlines()[0]),
                      [l for l in out.splitlines() if l.startswith("# brain axis")][0])
    assert runs["paper"][0] == {"paper": True, "choices": {"public_code": True, "raw_strength": True,
                                                           "adapter": "last"}}
    assert runs["ours"][0]["paper"] is False
    assert runs["ours"][1] != runs["paper"][1] and "raw units" in runs["paper"][1]


def test_embedding_change_is_the_model_word_embedding_step_and_deterministic(smollm2) -> None:
    import interp
    from atlases.words import Words, add_embedding_change, embedding_change
    from interp.batching import pool_words

    words = ["the", "cat", "sat", "on", "the", "mat"]
    a = embedding_change(smollm2, words, layers=[3, 7], chunk=6)
    assert a.shape == (6,) and np.array_equal(a, embedding_change(smollm2, words, layers=[3, 7], chunk=6))
    batch = interp.tokenize(smollm2.tokenizer, [" ".join(words)], words=True)
    cache = interp.run_with_cache(smollm2, batch, ["blocks.3.hook_resid_post", "blocks.7.hook_resid_post"])
    e = sum(pool_words(cache[s][0].float(), batch.word_ids[0], 6).double().numpy() for s in cache) / 2
    step = np.linalg.norm(e[1:] - e[:-1], axis=1)
    assert np.allclose(a[1:], step, rtol=1e-4) and a[0] == a[1] and (a > 0).all()
    w = add_embedding_change(smollm2, {None: Words(np.arange(6.0), words)}, layers=[3, 7], chunk=6)[None]
    assert w.user_names == ["embedding_change"] and np.allclose(w.user[:, 0], a)
