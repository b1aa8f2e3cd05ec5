"""Concept clamps (Davies 2025 §B step 5) on the real smollm2-135m.

A concept's neuron is found by LM-head decoding (its write direction gives the
concept token the highest probability over all 46,080 neurons); clamping it must
raise P(concept) as the next token after neutral prompts far more than clamping
random neurons of the same layer to the same value.
"""

from __future__ import annotations

import pytest
import torch

import interp
from probes.lm_head import LMHeadOptions, brute_force_top, lm_head_map, map_concept_neurons
from steering.clamps import (NEUTRAL_PROMPTS, ClampSweep, clamp_site, clamp_sweep, concept_clamp,
                             next_token_probability, pick_value, single_token_ids)

NOUNS = [" dog", " water", " city", " book", " house"]
VALUE = 20.0  # hook_post activations of smollm2 are mostly within ±5; 20 is a strong but finite clamp
N_RANDOM = 20


@pytest.fixture(scope="module")
def write_map(smollm2):
    return lm_head_map(smollm2, None, LMHeadOptions(directions=("write",)))


@pytest.mark.slow
def test_concept_neuron_clamp_beats_random_neurons(smollm2, write_map) -> None:
    g = torch.Generator().manual_seed(0)
    rows, wins = [], 0
    for noun in NOUNS:
        ids = single_token_ids(smollm2.tokenizer, noun)
        layer, neuron, _ = map_concept_neurons(smollm2, write_map, ids, k=1)[0]
        base = next_token_probability(smollm2, NEUTRAL_PROMPTS, ids).mean()
        concept = next_token_probability(smollm2, NEUTRAL_PROMPTS, ids,
                                         [concept_clamp(layer, neuron, VALUE)]).mean()
        others = [n for n in torch.randperm(smollm2.adapter.d_mlp, generator=g).tolist() if n != neuron][:N_RANDOM]
        random_rise = torch.stack([
            next_token_probability(smollm2, NEUTRAL_PROMPTS, ids, [concept_clamp(layer, n, VALUE)]).mean() - base
            for n in others])
        rise, median = float(concept - base), float(random_rise.median())
        ok = rise > 0 and rise >= 10 * max(median, 0.0) and concept >= 2 * base
        wins += ok
        rows.append(f"{noun!r:9} L{layer}:{neuron:<5} P {float(base):.4f} -> {float(concept):.4f} "
                    f"(rise {rise:+.4f}); random neurons' median rise {median:+.5f}, max {float(random_rise.max()):+.5f}"
                    f"  {'ok' if ok else 'no'}")
    print("\nclamp to", VALUE, "on", len(NEUTRAL_PROMPTS), "neutral prompts\n" + "\n".join(rows))
    assert wins >= 3, "\n".join(rows)


def _sweep(values, gains, baseline=0.01) -> ClampSweep:
    """A hand-made sweep whose mean P(concept) per value is gains × baseline (two prompts)."""
    probs = torch.tensor(gains)[:, None].repeat(1, 2) * baseline
    return ClampSweep(" x", 0, 0, list(values), probs, torch.full((2,), baseline))


def test_pick_value_on_fixed_sweeps() -> None:
    """The least-magnitude value reaching the target gain; when none does, the best value."""
    s = _sweep([0.0, -5.0, 10.0, 20.0, 40.0], [1.0, 2.0, 6.0, 20.0, 50.0])
    torch.testing.assert_close(s.gain(), torch.tensor([1.0, 2.0, 6.0, 20.0, 50.0]))
    assert pick_value(s, target_gain=5.0) == 10.0  # -5 is smaller but only doubles P
    assert pick_value(s, target_gain=20.0) == 20.0  # reached exactly
    assert pick_value(s, target_gain=25.0) == 40.0
    assert pick_value(s, target_gain=1e9) == 40.0  # none reaches it: the best
    s = _sweep([20.0, -5.0, 0.0], [30.0, 7.0, 1.0])
    assert pick_value(s, target_gain=5.0) == -5.0  # a negative clamp of smaller magnitude wins
    s = _sweep([0.0, 5.0, 10.0], [1.0, 3.0, 2.0])
    assert pick_value(s, target_gain=5.0) == 5.0  # none reaches 5: the best gain, not the largest value


@pytest.mark.slow
def test_clamp_sweep_of_a_concept_neuron(smollm2) -> None:
    """The layer-29 neuron whose write direction decodes to " book" (LM-head decoding, found here):
    clamped to 0 it barely moves P(" book") (one of 1536 neurons); clamped to 10 and 20 (beyond the
    ±5 where hook_post activations mostly lie) it multiplies P by at least 5, more for 20."""
    ids = single_token_ids(smollm2.tokenizer, " book")
    layer, neuron, _ = map_concept_neurons(smollm2, lm_head_map(smollm2, [29], LMHeadOptions(directions=("write",))),
                                           ids, k=1)[0]
    top, _ = brute_force_top(smollm2, layer, neuron, k=1)
    assert top.tolist() == ids  # its write direction's top token is the concept
    sweep = clamp_sweep(smollm2, " book", layer, neuron, [0.0, 10.0, 20.0], prompts=NEUTRAL_PROMPTS[:3])
    # the sweep runs on steering.evaluate's harness; the per-value loop it replaced, one direct forward per value:
    direct = ClampSweep(" book", layer, neuron, [0.0, 10.0, 20.0], torch.stack([
        next_token_probability(smollm2, NEUTRAL_PROMPTS[:3], ids, [concept_clamp(layer, neuron, v)])
        for v in (0.0, 10.0, 20.0)]), next_token_probability(smollm2, NEUTRAL_PROMPTS[:3], ids))
    torch.testing.assert_close(sweep.probs, direct.probs)  # the sweep repeats the single measurements
    torch.testing.assert_close(sweep.baseline, direct.baseline)
    for target in (1.0, 2.0, 5.0, 10.0, 1e9):  # and so picks the same value
        assert pick_value(sweep, target) == pick_value(direct, target)
    g0, g10, g20 = sweep.gain().tolist()
    assert 0.5 < g0 < 2.0, sweep.table()
    assert 5.0 <= g10 < g20, sweep.table()
    assert pick_value(sweep, target_gain=5.0) == 10.0
    assert pick_value(sweep, target_gain=1e9) == 20.0
    assert "× baseline" in sweep.table()


def test_clamp_errors(smollm2) -> None:
    with pytest.raises(interp.EditError, match="tokens for this tokenizer"):
        single_token_ids(smollm2.tokenizer, " dogcatcherhood")
    with pytest.raises(interp.EditError, match="positions"):
        concept_clamp(3, 4, 1.0, positions="later")
    with pytest.raises(interp.EditError, match="at least one"):
        clamp_sweep(smollm2, " dog", 29, 808, [])


def test_clamp_site_by_direction(smollm2) -> None:
    """write: the product feeding down_proj; up: the up_proj output (mlp.hook_pre on ungated MLPs)."""
    from tiny_models import tiny_model

    assert clamp_site(smollm2) == "mlp.hook_post" and clamp_site(smollm2, "up") == "mlp.hook_pre_linear"
    assert clamp_site(tiny_model("gpt2"), "up") == "mlp.hook_pre"
    assert concept_clamp(29, 7, 3.0, site="mlp.hook_pre_linear").site == "blocks.29.mlp.hook_pre_linear"
    with pytest.raises(interp.EditError, match="direction"):
        clamp_site(smollm2, "gate")


def test_up_concept_neuron_clamped_at_the_up_proj_output(smollm2) -> None:
    """The layer-29 neuron whose up_proj row decodes best to " book", clamped at its up_proj output: the edit sits
    at mlp.hook_pre_linear, the sweep repeats the single measurement, and a large clamp moves P(" book")."""
    ids = single_token_ids(smollm2.tokenizer, " book")
    layer, neuron, _ = map_concept_neurons(smollm2, lm_head_map(smollm2, [29], LMHeadOptions(directions=("up",))),
                                           ids, direction="up", k=1)[0]
    site = clamp_site(smollm2, "up")
    sweep = clamp_sweep(smollm2, " book", layer, neuron, [0.0, 20.0], prompts=NEUTRAL_PROMPTS[:2], site=site)
    edit = concept_clamp(layer, neuron, 20.0, site=site)
    assert edit.site == f"blocks.{layer}.mlp.hook_pre_linear"
    torch.testing.assert_close(sweep.probs[1], next_token_probability(smollm2, NEUTRAL_PROMPTS[:2], ids, [edit]))
    assert not torch.allclose(sweep.probs[1], sweep.baseline) and "at mlp.hook_pre_linear" in sweep.table()
