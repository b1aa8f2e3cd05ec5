"""Shared-neuron detection and SNRF on tiny models (issue 9): the scores are what they claim, runtime edits
equal the merge, the model is restored bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from probes.shared_neurons import SharedSettings, _qk_scores, neuron_sets, overlap, shared_sets
from steering.snrf import SnrfSettings, amplify, full_delta_edits, low_rank, merge, random_like, save_merged, snrf_edits

from model_checks import weight_hash
from tiny_models import tiny_model


def test_qk_scores_equal_removing_the_dimension_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(7, 4 * 8, generator=g), torch.randn(7, 2 * 8, generator=g)
    cq, ck = _qk_scores(q, k, n_heads=4, n_kv=2, d_head=8)

    def probs(qh, kh):
        s = (qh @ kh.T / math.sqrt(8)).masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), -torch.inf)
        return s.softmax(-1)

    for h, j in ((0, 1), (3, 5)):
        qh, kh = q[:, h * 8:(h + 1) * 8], k[:, (h // 2) * 8:(h // 2 + 1) * 8]
        cut = qh.clone()
        cut[:, j] = 0
        assert torch.isclose(cq[h * 8 + j], ((probs(cut, kh) - probs(qh, kh)) ** 2).sum(), rtol=1e-4)
        by_hand = 0.0
        for hh in (2 * (h // 2), 2 * (h // 2) + 1):  # the two query heads reading this key head
            qq = q[:, hh * 8:(hh + 1) * 8]
            kcut = kh.clone()
            kcut[:, j] = 0
            by_hand += float(((probs(qq, kcut) - probs(qq, kh)) ** 2).sum())
        assert math.isclose(float(ck[(h // 2) * 8 + j]), by_hand, rel_tol=1e-4)


def _pair(seed: int = 0):
    """A tiny Llava (the VLM) and an LLM with the same text backbone, weights moved by a rank-2 delta in layer 1."""
    from transformers import LlamaForCausalLM

    vlm = tiny_model("llava")
    text = vlm.hf.config.text_config
    llm_hf = LlamaForCausalLM(text).eval()
    state = {k.replace("model.language_model.", "model."): v for k, v in vlm.hf.state_dict().items()
             if k.startswith("model.language_model.")}
    state["lm_head.weight"] = vlm.hf.lm_head.weight
    llm_hf.load_state_dict(state, strict=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("mlp.up_proj", "mlp.down_proj", "self_attn.q_proj", "self_attn.o_proj"):
            w = llm_hf.get_submodule(f"model.layers.1.{name}").weight
            w += 0.3 * torch.randn(w.shape[0], 2, generator=g) @ torch.randn(2, w.shape[1], generator=g)
    llm = interp.Model(hf=llm_hf, tokenizer=None, adapter=interp.adapters.adapter_for(llm_hf), name="tiny-llm",
                       source="test")
    return vlm, llm


def _samples(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 200, (1, 10), generator=g)} for _ in range(n)]


def test_identical_models_share_every_kept_unit_and_random_sets_do_not() -> None:
    model = tiny_model("llama")
    settings = SharedSettings(ratio_ffn=0.6, ratio_attn=0.6)
    sets = neuron_sets(model, _samples(), settings)
    o = overlap(sets, sets)
    for m in o.values():
        assert all(n > 0 for n in m.n_vlm) and all(v == 1.0 for v in m.overlap) and max(m.random_overlap) < 1.0
        assert all(0.2 < e < 0.7 for e in m.expected)
    more = neuron_sets(model, _samples(6), settings)  # the same first three samples, then three more
    assert all(not (more.sets[m][l] & ~sets.sets[m][l]).any() for m in more.sets for l in more.sets[m])
    pooled = neuron_sets(model, _samples(), SharedSettings(pool_layers=True))
    assert torch.equal(pooled.sets["up"][0], pooled.sets["up"][1])


def test_snrf_runtime_edit_equals_the_merge_and_the_model_is_restored(tmp_path) -> None:
    vlm, llm = _pair()
    shared = shared_sets(neuron_sets(llm, _samples()), neuron_sets(vlm, _samples()))
    edits = snrf_edits(vlm, llm, shared, SnrfSettings(rank=4, beta=0.5))
    assert edits and {e.module.split(".", 2)[2] for e in edits} <= {"mlp.up_proj", "mlp.down_proj", "self_attn.q_proj",
                                                                      "self_attn.k_proj", "self_attn.v_proj",
                                                                      "self_attn.o_proj"}
    ids = _samples(1, seed=5)[0]["input_ids"]
    before = weight_hash(vlm)
    base = vlm.hf(input_ids=ids).logits
    with interp.edit(vlm, edits):
        steered = vlm.hf(input_ids=ids).logits
    assert weight_hash(vlm) == before  # restored bit for bit
    assert not torch.allclose(steered, base, atol=1e-4)  # layer 1 differs, so something moved
    folder = save_merged(vlm, edits, tmp_path / "merged")
    assert weight_hash(vlm) == before
    from transformers import LlavaForConditionalGeneration

    merged = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    # float32: equal up to rounding (|logits| ≈ 7 here); float64: within 1e-5 outright
    torch.testing.assert_close(merged(input_ids=ids).logits, steered, atol=1e-5, rtol=1e-5)
    vlm.hf.double(), merged.double()
    with interp.edit(vlm, edits):
        steered64 = vlm.hf(input_ids=ids).logits
    torch.testing.assert_close(merged(input_ids=ids).logits, steered64, atol=1e-5, rtol=0)


def test_low_rank_and_row_restriction_follow_the_formula() -> None:
    vlm, llm = _pair()
    w_v = vlm.adapter.mlp(1).up_proj.weight.detach()
    w_l = llm.adapter.mlp(1).up_proj.weight.detach()
    a, b = low_rank(w_l - w_v, 2)
    torch.testing.assert_close(a @ b, w_l - w_v, atol=1e-5, rtol=0)  # the planted delta is rank 2
    rows = torch.zeros(w_v.shape[0], dtype=torch.bool)
    rows[[0, 3, 7]] = True
    shared = {"up": {1: rows}}
    (edit,) = snrf_edits(vlm, llm, shared, SnrfSettings(rank=2, beta=0.5, modules=("up",)))
    expected = torch.zeros_like(w_v)
    expected[[0, 3, 7]] = 0.5 * (w_l - w_v)[[0, 3, 7]]
    torch.testing.assert_close(edit.delta(), expected, atol=1e-5, rtol=0)
    (quirk,) = snrf_edits(vlm, llm, shared, SnrfSettings(rank=2, beta=0.5, modules=("up",), beta_quirk=True))
    torch.testing.assert_close(quirk.delta(), 2 * expected, atol=1e-5, rtol=0)
    (down,) = snrf_edits(vlm, llm, shared, SnrfSettings(rank=2, modules=("down",)))
    assert down.cols is not None and down.cols.tolist() == [0, 3, 7]
    full = full_delta_edits(vlm, llm, SnrfSettings(rank=None, beta=1.0))
    merge(vlm, full)
    for key in ("up_proj", "down_proj"):
        torch.testing.assert_close(getattr(vlm.adapter.mlp(1), key).weight, getattr(llm.adapter.mlp(1), key).weight,
                                   atol=1e-5, rtol=0)


def test_random_like_and_amplify_keep_the_counts() -> None:
    shared = {"up": {0: torch.tensor([True, False, True, False]), 1: torch.tensor([False] * 4)},
              "o": {0: torch.tensor([False, True, False, False])}}
    rand = random_like(shared, seed=1)
    assert {m: {l: int(v.sum()) for l, v in d.items()} for m, d in rand.items()} == \
           {"up": {0: 2, 1: 0}, "o": {0: 1}}
    edits = amplify(shared, 3.0)
    assert [(e.site, e.neurons.tolist()) for e in edits] == [("blocks.0.mlp.hook_post", [0, 2]),
                                                            ("blocks.0.attn.hook_z", [1])]
    with pytest.raises(Exception):
        snrf_edits(tiny_model("llava"), tiny_model("gpt2"), shared)


def test_a_qwen2_vl_text_backbone_pairs_with_its_llm() -> None:
    """Real VLM classes are compared by their text backbone: a Qwen2-VL and a copy whose layer-1 FFN moved."""
    vlm, llm = tiny_model("qwen2_vl"), tiny_model("qwen2_vl")  # seeded: the same weights
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        w = llm.adapter.mlp(1).up_proj.weight
        w += 0.3 * torch.randn(w.shape[0], 2, generator=g) @ torch.randn(2, w.shape[1], generator=g)
    llm_sets, vlm_sets = neuron_sets(llm, _samples()), neuron_sets(vlm, _samples())
    o = overlap(llm_sets, vlm_sets)
    assert o["q"].overlap == [1.0, 1.0] and o["up"].overlap[0] == 1.0  # unchanged layers: identical sets
    shared = shared_sets(llm_sets, vlm_sets)
    (edit,) = snrf_edits(vlm, llm, shared, SnrfSettings(rank=2, beta=1.0))  # only layer 1's up_proj differs
    assert edit.module.endswith("1.mlp.up_proj") and edit.rows.tolist() == shared["up"][1].nonzero().flatten().tolist()
    ids = _samples(1, seed=9)[0]["input_ids"]
    before = weight_hash(vlm)
    base = vlm.hf(input_ids=ids).logits
    with interp.edit(vlm, [edit]):
        assert not torch.allclose(vlm.hf(input_ids=ids).logits, base, atol=1e-5)
    assert weight_hash(vlm) == before
