"""LM-head decoding (probes/lm_head.py) and its atlas (atlases/lm_head.py) against brute force.

The brute force is the obvious computation written here: softmax(W_U @ (w ⊙ g)) for
one neuron, with W_U, w and g read straight off the HF modules by name.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import interp
from atlases import compare, decoded_vocab, lm_head_atlas, load_atlas
from probes.lm_head import LMHeadOptions, lm_head_map, map_concept_neurons
from tiny_models import TINY_FAMILIES, tiny_model

OPTION_GRID = list(itertools.product([True, False], [True, False]))  # (final_norm, unit)


def hf_direction(hf_llama, layer: int, neuron: int, direction: str) -> torch.Tensor:
    """A Llama-style neuron's direction read off the HF modules, [d_model]."""
    mlp = hf_llama.model.layers[layer].mlp
    if direction == "write":
        return mlp.down_proj.weight[:, neuron].detach().float()
    return getattr(mlp, f"{direction}_proj").weight[neuron].detach().float()


def brute_probs(hf_llama, w: torch.Tensor, final_norm: bool, unit: bool) -> torch.Tensor:
    """softmax over the vocabulary of W_U · w (options applied), [vocab]."""
    if final_norm:
        w = w * hf_llama.model.norm.weight.detach().float()
    if unit:
        w = w / w.norm()
    return torch.softmax(hf_llama.lm_head.weight.detach().float() @ w, dim=-1)


@pytest.mark.slow
@pytest.mark.parametrize("final_norm,unit", OPTION_GRID)
def test_smollm2_top10_equals_brute_force(smollm2, final_norm: bool, unit: bool) -> None:
    layer = 3 if unit else 28
    opts = LMHeadOptions(directions=("write", "up", "gate"), final_norm=final_norm, unit=unit, k=10, index_k=0)
    m = lm_head_map(smollm2, [layer], opts)
    g = torch.Generator().manual_seed(int(final_norm) * 2 + int(unit))
    for direction in opts.directions:
        for n in torch.randint(smollm2.adapter.d_mlp, (4,), generator=g).tolist():
            probs = brute_probs(smollm2.hf, hf_direction(smollm2.hf, layer, n, direction), final_norm, unit)
            p, ids = probs.topk(10)
            assert m.get(direction, "top_ids")[0, n].tolist() == ids.tolist(), (direction, n)
            torch.testing.assert_close(m.get(direction, "top_probs")[0, n], p, rtol=1e-4, atol=1e-7)


def test_unit_norm_keeps_each_neurons_ranking(smollm2) -> None:
    """Unit-normalising rescales a neuron's logits: its top-k order can only change if the scale is not positive."""
    a = lm_head_map(smollm2, [7], LMHeadOptions(directions=("write",), unit=False, index_k=0))
    b = lm_head_map(smollm2, [7], LMHeadOptions(directions=("write",), unit=True, index_k=0))
    assert torch.equal(a.get("write", "top_ids"), b.get("write", "top_ids"))
    assert not torch.allclose(a.get("write", "top_probs"), b.get("write", "top_probs"))


def test_the_bf16_map_stores_the_fp32_top_k_on_every_neuron_of_two_layers(smollm2) -> None:
    """bfloat16 products, candidates re-ranked in fp32, the rest decoded again: the stored top-k is the fp32 map's
    on every neuron; the neurons the bound could not cover are few and reported; lse agrees within 0.15 %."""
    layers = [5, 28]
    full = lm_head_map(smollm2, layers, LMHeadOptions(directions=("write",)))  # one direction: bf16 is emulated
    low = lm_head_map(smollm2, layers, LMHeadOptions(directions=("write",), dtype="bfloat16"))  # on AVX2-only CPUs
    for d in ("write",):
        redone = low.get(d, "recomputed")
        assert redone.dtype == torch.bool and redone.float().mean() < 0.05, redone.float().mean()
        _same_top_k(low.get(d, "top_ids"), full.get(d, "top_ids"), full.get(d, "top_logits"))
        torch.testing.assert_close(low.get(d, "top_logits"), full.get(d, "top_logits"), rtol=1e-5, atol=1e-5)
        # the log-sum-exp keeps the bf16 tail (rounding w shifts every tail logit alike): within 0.15 %
        torch.testing.assert_close(low.get(d, "lse"), full.get(d, "lse"), rtol=1.5e-3, atol=0)
        torch.testing.assert_close(low.get(d, "top_probs"), full.get(d, "top_probs"), rtol=2e-2, atol=1e-6)
    # with only k candidates most neurons cannot be shown covered: they are decoded again, and still exact
    few = lm_head_map(smollm2, [28], LMHeadOptions(directions=("write",), dtype="bfloat16", candidates=10))
    assert few.get("write", "recomputed").float().mean() > 0.5
    _same_top_k(few.get("write", "top_ids"), full.get("write", "top_ids")[1:], full.get("write", "top_logits")[1:])


def _same_top_k(ids: torch.Tensor, ref_ids: torch.Tensor, ref_logits: torch.Tensor) -> None:
    """Identical top-k lists, except that two tokens whose fp32 logits tie to rounding (< 1e-5 apart) may swap."""
    differ = (ids != ref_ids).any(-1)
    assert differ.float().mean() < 1e-3, int(differ.sum())
    for idx in differ.nonzero().tolist():
        got, want, logits = ids[tuple(idx)], ref_ids[tuple(idx)], ref_logits[tuple(idx)]
        assert sorted(got.tolist()) == sorted(want.tolist()), (idx, got, want)
        moved = (got != want).nonzero().squeeze(-1)
        assert float(logits[moved].max() - logits[moved].min()) < 1e-5, (idx, logits[moved])


@pytest.mark.slow
def test_chunking_does_not_change_the_map(smollm2) -> None:
    big = lm_head_map(smollm2, [12], LMHeadOptions(directions=("write",), chunk=1536, index_k=8))
    small = lm_head_map(smollm2, [12], LMHeadOptions(directions=("write",), chunk=100, index_k=8))
    assert torch.equal(big.get("write", "top_ids"), small.get("write", "top_ids"))
    torch.testing.assert_close(big.get("write", "lse"), small.get("write", "lse"), rtol=1e-5, atol=1e-5)
    # the index: the same probabilities; the same neurons except where two are tied to rounding (GEMM blocking)
    torch.testing.assert_close(big.get("write", "index_probs"), small.get("write", "index_probs"), rtol=1e-4, atol=1e-9)
    same = (big.get("write", "index_neurons") == small.get("write", "index_neurons")).float().mean()
    assert same > 0.999, same


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_tiny_families_equal_brute_force(family: str) -> None:
    """Every family (gated or not, Conv1D, Gemma's 1 + w norm) through the adapter equals W_U @ w by hand."""
    model = tiny_model(family)
    a = model.adapter
    with torch.no_grad():
        a.final_norm.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    directions = ("write", "up") + (("gate",) if a.family.gate or a.family.fused_gate_up else ())
    m = lm_head_map(model, None, LMHeadOptions(directions=directions, k=5, index_k=0, chunk=37))
    unembed = a.unembed_module.weight.detach().float()
    norm = a.final_norm.weight.detach().float() + a.family.norm_offset
    for d in directions:
        for layer, n in ((0, 0), (a.n_layers - 1, a.d_mlp - 1), (0, 50)):
            w = {"write": a.write_weights(layer)[:, n]}.get(d)
            w = a.read_weights(layer, d)[n] if w is None else w
            ids = (unembed @ (w.detach().float() * norm)).topk(5).indices
            assert m.get(d, "top_ids")[layer, n].tolist() == ids.tolist(), (family, d, layer, n)


@pytest.mark.slow
def test_concept_index_ranks_all_neurons_by_probability(smollm2) -> None:
    """neurons_for(token) = the neurons with the highest softmax p(token), by brute force over the mapped layers."""
    layers = [20, 26]
    m = lm_head_map(smollm2, layers, LMHeadOptions(directions=("write",), index_k=16, chunk=512))
    atlas = lm_head_atlas(m, model=smollm2.name, revision=None, vocab=decoded_vocab(smollm2.tokenizer, m.vocab))
    token_id = smollm2.tokenizer.encode(" dog", add_special_tokens=False)[0]
    allp = []
    for layer in layers:
        w = smollm2.hf.model.layers[layer].mlp.down_proj.weight.detach().float().T  # [d_mlp, d_model]
        logits = (w * smollm2.hf.model.norm.weight.detach().float()) @ smollm2.hf.lm_head.weight.detach().float().T
        allp.append(logits.softmax(-1)[:, token_id])
    p, flat = torch.cat(allp).topk(10)
    hits = atlas.neurons_for(" dog", k=10)
    assert [(h.layer, h.neuron) for h in hits] == [(layers[f // 1536], f % 1536) for f in flat.tolist()]
    exact = map_concept_neurons(smollm2, m, [token_id], k=10)  # from the weights and the stored lse, no index
    assert [(l, n) for l, n, _ in exact] == [(h.layer, h.neuron) for h in hits]
    torch.testing.assert_close(torch.tensor([q for _, _, q in exact]), p, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(torch.tensor([h.prob for h in hits]), p, rtol=1e-4, atol=1e-8)
    top = atlas.tokens_for(hits[0].layer, hits[0].neuron)
    assert hits[0].rank == next((i for i, t in enumerate(top) if t.token == " dog"), -1)
    # without the index, the top-k lists give the same best neurons where the token is in them
    no_index = lm_head_atlas(lm_head_map(smollm2, layers, LMHeadOptions(directions=("write",), index_k=0)),
                             model=smollm2.name, revision=None, vocab=atlas.vocab)
    in_lists = [h for h in hits if h.rank >= 0]
    assert [(h.layer, h.neuron) for h in no_index.neurons_for(" dog", k=len(in_lists))] == \
        [(h.layer, h.neuron) for h in in_lists]


def test_atlas_round_trip_and_errors(smollm2, tmp_path) -> None:
    m = lm_head_map(smollm2, [29], LMHeadOptions(directions=("write", "up"), index_k=8))
    atlas = lm_head_atlas(m, model=smollm2.name, revision=smollm2.revision,
                          vocab=decoded_vocab(smollm2.tokenizer, m.vocab))
    atlas.save(tmp_path / "a")
    back = load_atlas(tmp_path / "a", model=smollm2.name)
    assert back.vocab == atlas.vocab and back.params == atlas.params
    assert back.neurons_for(" the", k=5) == atlas.neurons_for(" the", k=5)
    assert back.tokens_for(29, 7, direction="up") == atlas.tokens_for(29, 7, direction="up")
    with pytest.raises(interp.AtlasError, match="not a single token"):
        back.neurons_for(" dogcatcherhood")
    with pytest.raises(interp.AtlasError, match="no 'gate' direction"):
        back.neurons_for(" the", direction="gate")
    with pytest.raises(interp.AtlasError, match="layer 3 is not in this atlas"):
        back.tokens_for(3, 0)
    with pytest.raises(interp.AtlasError, match="made for model"):
        load_atlas(tmp_path / "a", model="gemma3-270m")
    (tmp_path / "a" / "vocab.json").write_text("[]")
    with pytest.raises(interp.AtlasError, match="vocab.json does not match its checksum"):
        load_atlas(tmp_path / "a")


def test_compare_self_is_100_percent(smollm2) -> None:
    m = lm_head_map(smollm2, [0, 29], LMHeadOptions(directions=("up",), index_k=0))
    atlas = lm_head_atlas(m, model=smollm2.name, revision=None, vocab=decoded_vocab(smollm2.tokenizer, m.vocab))
    agreement = compare(atlas, atlas, direction="up")
    assert agreement.percent == 100.0 and agreement.moved == []


@pytest.mark.slow
def test_compare_against_a_lightly_finetuned_copy(smollm2) -> None:
    """Fine-tune two layers' MLPs a little: some neurons' top tokens move, most stay, and the moved ones are listed."""
    import copy

    layers = [1, 29]
    tuned_hf = copy.deepcopy(smollm2.hf)
    params = [p for l in layers for p in tuned_hf.model.layers[l].mlp.parameters()]
    for p in tuned_hf.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=3e-4)
    enc = smollm2.tokenizer(["The dog ran across the field to fetch the ball.",
                             "Cats sleep most of the day in the warm sun."], return_tensors="pt", padding=True)
    for _ in range(4):
        loss = tuned_hf(**enc, labels=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    tuned_hf.eval()
    tuned = interp.Model(hf=tuned_hf, tokenizer=smollm2.tokenizer, adapter=interp.adapters.adapter_for(tuned_hf),
                         name="smollm2-135m-tuned", source="test")
    opts = LMHeadOptions(directions=("up",), index_k=0)
    vocab = decoded_vocab(smollm2.tokenizer, smollm2.hf.lm_head.weight.shape[0])
    base = lm_head_atlas(lm_head_map(smollm2, layers, opts), model=smollm2.name, revision=None, vocab=vocab)
    moved = lm_head_atlas(lm_head_map(tuned, layers, opts), model=tuned.name, revision=None, vocab=vocab)
    agreement = compare(base, moved, direction="up")
    print(f"\ntop-token agreement after light fine-tuning: {agreement.percent:.2f}% "
          f"({len(agreement.moved)} of {len(layers) * 1536} moved); per layer {agreement.per_layer}")
    assert 0 < agreement.percent < 100
    assert len(agreement.moved) == round((1 - agreement.share) * len(layers) * 1536)
    for layer, n, tok_a, tok_b in agreement.moved[:5]:
        before = brute_probs(smollm2.hf, hf_direction(smollm2.hf, layer, n, "up"), True, False).argmax()
        after = brute_probs(tuned_hf, hf_direction(tuned_hf, layer, n, "up"), True, False).argmax()
        assert (vocab[int(before)], vocab[int(after)]) == (tok_a, tok_b) and tok_a != tok_b


def test_compile_fallback_warns_once_and_computes_the_same(monkeypatch) -> None:
    """When torch.compile cannot run here, row_stats says once that it fell back to eager."""
    import warnings

    from probes import lm_head as lm

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(lm, "_compiled_row_stats", None)
    monkeypatch.setattr(torch, "compile", broken)
    logits = torch.randn(3, 2 * lm.BLOCK)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = lm.row_stats(logits), lm.row_stats(logits)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "eager" in messages[0] and "no compiler here" in messages[0], messages
    want = lm._row_stats(logits)
    assert all(torch.equal(a, b) and torch.equal(b, c) for a, b, c in zip(first, second, want))
