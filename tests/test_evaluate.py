"""The steering evaluation harness (issue 31), on a planted case: a tiny random Llama (with smollm2's tokenizer)
whose steering family adds a unit direction w to the last layer's residual — the effect, the final residual's
projection on w, then moves by exactly the strength — and at every other layer a direction orthogonal to w. One
setting also adds a large noise vector orthogonal to w: same effect as its strength, broken fluency. The harness
must recommend the planted layer, estimate slope 1 within 10 %, keep the broken setting off the Pareto front, and
see no effect of a direction that does nothing."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from steering.evaluate import (Distinct2, Effect, MentionRate, NeutralKL, Perplexity, TokenProbability, compare,
                               continuation_nll, sweep)

LAYERS, PLANTED, BROKEN = (0, 1, 2, 3), 3, 2  # BROKEN: the strength index that also adds noise at PLANTED
PROMPTS = ["The weather today is", "My favourite food is", "In the morning I", "The old house had",
           "She opened the door and", "Every summer we", "The book on the table", "He looked at the sky and"]
NEUTRAL = ["Once upon a time", "The meeting starts at", "I think that"]


@pytest.fixture(scope="module")
def planted(smollm2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = smollm2.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=len(LAYERS),
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                      initializer_range=0.15)  # sharp next-token distributions, so that a broken setting shows
    hf = LlamaForCausalLM(cfg).eval()
    model = interp.Model(hf=hf, tokenizer=tok, adapter=interp.adapters.adapter_for(hf), name="tiny-planted",
                         source="test")
    g = torch.Generator().manual_seed(1)
    w = torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0)
    others = {}
    for layer in LAYERS:  # each a unit direction orthogonal to w
        r = torch.randn(32, generator=g)
        others[layer] = torch.nn.functional.normalize(r - (r @ w) * w, dim=0)

    seen = {}
    hook = model.adapter.final_norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    with torch.inference_mode():
        enc = interp.batching.encode_left(tok, PROMPTS)
        model.hf(**enc)
    hook.remove()
    scale = float(seen["x"][:, -1].norm(dim=-1).mean())  # strengths in units of the final residual's norm
    strengths = [scale * k for k in (0.0, 0.05, 0.1, 0.15, 0.2)]
    noise = others[PLANTED] * 20 * scale

    def family(layer: int, strength: float) -> list:
        site = f"blocks.{layer}.hook_resid_post"
        if layer != PLANTED:
            return [interp.Add(site, others[layer], scale=strength)]
        edits = [interp.Add(site, w, scale=strength)]
        if strength == strengths[BROKEN]:
            edits.append(interp.Add(site, noise))
        return edits

    def projection(out) -> torch.Tensor:
        seen.clear()
        h = model.adapter.final_norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
        try:
            out.next_logprobs()
        finally:
            h.remove()
        return (seen["x"][:, -1].float() @ w).double()

    scorers = [Effect("projection", projection), Perplexity(), Distinct2(), NeutralKL(NEUTRAL)]
    result = sweep(model, family, PROMPTS, LAYERS, strengths, scorers, generation={"max_new_tokens": 6})
    return result, strengths, scale


@pytest.mark.slow  # the planted sweep: 20 settings
def test_the_planted_layer_is_recommended_with_its_slope(planted):
    result, strengths, scale = planted
    at = {(s.layer, s.strength): s for s in result.settings}
    broken_kl = at[(PLANTED, strengths[BROKEN])].mean("KL neutral")
    clean_kl = max(s.mean("KL neutral") for s in result.settings if (s.layer, s.strength) != (PLANTED, strengths[BROKEN]))
    assert broken_kl > 3 * clean_kl  # the plant works: the noise breaks the next-token distributions
    best = result.recommend("projection", {"KL neutral": math.sqrt(broken_kl * clean_kl)})
    assert best.layer == PLANTED and best.strength == strengths[-1]
    planted_slope = result.steerability("projection", PLANTED)
    assert planted_slope.slope == pytest.approx(1.0, rel=0.1)  # per unit strength: w is unit-norm
    assert planted_slope.significant and planted_slope.consistency == 1.0 and planted_slope.r2 > 0.9
    for layer in LAYERS[:-1]:  # orthogonal directions reach w only through the later random layers
        assert abs(result.steerability("projection", layer).slope) < 0.5 * planted_slope.slope


@pytest.mark.slow  # the planted sweep: 20 settings
def test_the_pareto_front_leaves_out_the_broken_setting(planted):
    result, strengths, _ = planted
    front = {(s.layer, s.strength) for s in result.pareto("projection", ["KL neutral"])}
    assert (PLANTED, strengths[BROKEN]) not in front
    assert (PLANTED, strengths[-1]) in front  # the largest clean effect is never dominated


@pytest.mark.slow  # the planted sweep: 20 settings
def test_every_setting_has_every_score_per_prompt(planted):
    result, strengths, _ = planted
    assert len(result.settings) == len(LAYERS) * len(strengths)
    for s in result.settings:
        assert s.scores["projection"].shape == (len(PROMPTS),) and s.scores["KL neutral"].shape == (len(NEUTRAL),)
        assert ((s.scores["distinct-2"] >= 0) & (s.scores["distinct-2"] <= 1)).all()
    zero = [s for s in result.settings if s.strength == 0]
    assert all(s.mean("KL neutral") < 1e-6 for s in zero)  # no edit, no side effect
    md = result.markdown()
    assert md.count("\n") == len(result.settings) + 1 and "KL neutral" in md


def test_batched_perplexity_equals_one_prompt_at_a_time(smollm2):
    from steering.language_eval import continuation_perplexity

    prompts, texts = PROMPTS[:4], [" sunny and warm.", " pizza with cheese", " drink coffee", ""]
    nll = continuation_nll(smollm2, prompts, texts)
    for p, t, v in zip(prompts, texts, nll):
        if t:
            assert float(v.exp()) == pytest.approx(continuation_perplexity(smollm2, [p], [t]), rel=1e-3)  # padding
        else:
            assert math.isnan(float(v))


def test_scorers_read_what_they_say(smollm2):
    from steering.evaluate import Outputs

    out = Outputs(smollm2, ["I like my", "The capital of France is"], (), [" dog and cat.", " Paris."])
    assert MentionRate([" dog"])(out).tolist() == [1.0, 0.0]
    dog = smollm2.tokenizer(" dog", add_special_tokens=False)["input_ids"]
    p = TokenProbability(dog)(out)
    assert p.shape == (2,) and 0 < float(p[0]) < 1


def test_compare_separates_shifted_conditions_and_not_equal_ones():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, generator=g), torch.randn(30, generator=g)
    same = compare(a, b, permutations=500)
    shifted = compare(a + 1.5, b, permutations=500)
    assert shifted.p < 0.01 and shifted.cohens_d > 1 and same.p > 0.05


def test_compare_drops_nans_and_refuses_too_few_values():
    from interp.errors import InterpError

    a = torch.tensor([1.0, 2.0, math.nan, 3.0])
    assert compare(a, torch.tensor([0.0, 1.0, 2.0]), permutations=50).difference == pytest.approx(1.0)
    with pytest.raises(InterpError, match="two finite values"):
        compare(torch.tensor([1.0, math.nan]), torch.tensor([0.0, 1.0]))


def test_matched_pairs_pair_nearest_costs_one_to_one_and_the_paired_test_reads_their_differences():
    from steering.evaluate import compare_matched, matched_pairs, sign_flip_p

    assert sorted(matched_pairs([2.0, 10.0, 5.0], [9.0, 2.1])) == [(0, 1), (1, 0)]
    assert matched_pairs([2.0, math.nan], [math.nan, 3.0]) == [(0, 1)]
    assert sign_flip_p(torch.full((12,), 0.3)) < 0.01 and sign_flip_p(torch.tensor([1.0, -1.0] * 6)) > 0.5
    # a's effect only shows on its broken text (high cost, no partner of similar cost on b's side): b's three
    # low-cost items pair with a's three, and the matched difference is 0 where the plain one is not
    cost_a, cost_b = [1.0, 2.0, 4.0, 100.0, 200.0], [1.1, 2.1, 3.9]
    a, b = torch.tensor([0.0, 1.0, 2.0, 50.0, 60.0]), torch.tensor([0.0, 1.0, 2.0])
    m = compare_matched(a, b, cost_a, cost_b, permutations=200)
    assert sorted(m.pairs) == [(0, 0), (1, 1), (2, 2)] and m.difference == 0 and m.p == 1.0
    assert compare(a, b, permutations=200).difference > 20


def test_a_sweep_of_labelled_variants_with_its_own_generate_and_seed():
    """Comparisons of writers are sweeps whose "layers" are variant labels; a caller's `generate` (here a stub
    answering from the edits it is given) replaces interp.generate, `ExactMatch` / `Changed` score its answers,
    and a seed makes every setting draw the same random stream."""
    from steering.evaluate import Changed, ExactMatch

    gold, base = ["4", "6", "9"], ["4", "5", "9"]
    shift = {"none": 0, "one": 1}

    def generate(questions, edits):
        k = edits[0] if edits else 0
        draw = torch.rand(1).item()
        return [str(int(b) + k * (i == 1)) + (" " if draw < 2 else "") for i, b in enumerate(base)]

    result = sweep(None, lambda name, s: [shift[name] * int(s)] if shift[name] * s else [], ["q1", "q2", "q3"],
                   ["none", "one"], [1.0], [ExactMatch(gold), Changed(base)], generate=generate, seed=3)
    means = {s.layer: (s.mean("accuracy"), s.mean("changed")) for s in result.settings}
    assert means == {"none": (pytest.approx(2 / 3), 0.0), "one": (1.0, pytest.approx(1 / 3))}
    assert result.recommend("accuracy", {}).layer == "one"
    with pytest.raises(interp.errors.InterpError, match="own generate"):
        sweep(None, lambda *_: [], ["q"], ["a"], [1.0], [ExactMatch(["x"])])
    draws = []
    sweep(None, lambda *_: [], ["q"], ["a", "b"], [1.0], [ExactMatch(["x"])], seed=5,
          generate=lambda q, e: draws.append(torch.rand(1).item()) or ["x"])
    assert draws[0] == draws[1]


def test_steerability_without_a_complete_prompt_is_a_clear_error():
    """An effect with no value at some strength for every prompt (e.g. word frequency of wordless text) has no
    slope: a typed error the CLI reports as n/a, not a torch error from an empty tensor."""
    from interp.errors import InterpError
    from steering.evaluate import Effect

    nan_at_2 = Effect("f", lambda out: torch.full((2,), math.nan if out.edits else 1.0))
    result = sweep(None, lambda _l, s: [s] if s == 2 else [], ["a", "b"], [0], [1.0, 2.0], [nan_at_2],
                   generate=lambda q, e: ["x", "y"])
    with pytest.raises(InterpError, match="no prompt has a f value at every strength"):
        result.steerability("f", 0)
