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
from probes.lm_head import LMHeadOptions, lm_head_map, map_concept_neurons
from steering.clamps import (NEUTRAL_PROMPTS, clamp_sweep, concept_clamp, next_token_probability, pick_value,
                             single_token_ids)

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


def test_clamp_sweep_and_pick(smollm2) -> None:
    """A sweep repeats the single measurements; the picked value is the least that reaches the target gain."""
    sweep = clamp_sweep(smollm2, " book", 29, 437, [0.0, 10.0, 20.0], prompts=NEUTRAL_PROMPTS[:3])
    ids = single_token_ids(smollm2.tokenizer, " book")
    again = next_token_probability(smollm2, NEUTRAL_PROMPTS[:3], ids, [concept_clamp(29, 437, 20.0)])
    torch.testing.assert_close(sweep.probs[2], again)
    v = pick_value(sweep, target_gain=5.0)
    gain = dict(zip(sweep.values, sweep.gain().tolist()))
    if max(gain.values()) >= 5.0:
        assert gain[v] >= 5.0 and all(gain[u] < 5.0 for u in sweep.values if abs(u) < abs(v))
    else:
        assert gain[v] == max(gain.values())
    assert pick_value(sweep, target_gain=1e9) == max(gain, key=gain.get)
    assert "× baseline" in sweep.table()


def test_clamp_errors(smollm2) -> None:
    with pytest.raises(interp.EditError, match="tokens for this tokenizer"):
        single_token_ids(smollm2.tokenizer, " dogcatcherhood")
    with pytest.raises(interp.EditError, match="positions"):
        concept_clamp(3, 4, 1.0, positions="later")
    with pytest.raises(interp.EditError, match="at least one"):
        clamp_sweep(smollm2, " dog", 29, 808, [])
