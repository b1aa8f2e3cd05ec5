"""The parts of the vLLM engine that run without vLLM (serve.vllm_worker, interp.edits' packing): site names
mapped onto vLLM's modules, low-rank terms on fused projections, capture in chunks, edit sets as bytes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
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
    out = fused.clone()
    term(x, out, keys)  # in place, as the tap runs it
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


def test_the_engine_refuses_what_vllm_cannot_run_before_it_runs_and_a_refused_set_is_not_shipped_again():
    """`check` (called by the server before a request starts): a site vLLM lacks, and on a compiled engine a
    site without a tap, are refused by name; a set the workers refuse is left out of later shipments."""
    import asyncio
    import weakref

    from serve.engine import Steering
    from serve.vllm_engine import VllmEngine

    class FakeLLM:
        shipped: list = []

        async def collective_rpc(self, method, args=()):
            sets = unpack_edit_sets(args[0])
            if any(e.site.startswith("blocks.29") for es in sets.values() for e in es):
                raise RuntimeError("refused by the worker")
            self.shipped.append(sorted(sets))

    engine = object.__new__(VllmEngine)
    engine.llm, engine._sets, engine._users, engine._ship = FakeLLM(), {}, {}, asyncio.Lock()
    engine._names, engine.shapes = weakref.WeakKeyDictionary(), SHAPES
    engine.taps = frozenset({"blocks.1.hook_resid_post", "blocks.2.mlp.up_proj", "blocks.29.hook_resid_post"})

    def steer(site, *more):
        return Steering([interp.Add(site, torch.ones(576), 1.0), *more], "inline")

    engine.check(steer("blocks.1.hook_resid_post"))
    engine.check(Steering([interp.LowRank("model.layers.2.mlp.up_proj", torch.ones(1536, 1), torch.ones(1, 576))], "x"))
    with pytest.raises(EditError, match="blocks.3.hook_resid_post has none"):
        engine.check(steer("blocks.1.hook_resid_post", interp.Add("blocks.3.hook_resid_post", torch.ones(576), 1.0)))
    with pytest.raises(EditError, match="not available on the vLLM engine"):
        engine.check(steer("blocks.1.hook_resid_mid"))

    async def ship():
        await engine._name_of(steer("blocks.1.hook_resid_post"))
        with pytest.raises(RuntimeError):
            await engine._name_of(steer("blocks.29.hook_resid_post"))
        await engine._name_of(Steering([interp.Add("blocks.1.hook_resid_post", torch.ones(576), 2.0)], "x"))

    asyncio.run(ship())
    assert [len(s) for s in FakeLLM.shipped] == [1, 2]  # the refused set never rode along


class _Tiny(torch.nn.Module):
    """vLLM's Llama layout in miniature: layers take and return (hidden, residual), the add fused into the
    next step, with self_attn.o_proj, mlp.gate_up_proj and mlp.down_proj."""

    config = SimpleNamespace(num_hidden_layers=2, hidden_size=8, intermediate_size=6, num_attention_heads=2,
                             num_key_value_heads=2)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn, self.mlp = torch.nn.Module(), torch.nn.Module()
            self.self_attn.o_proj = torch.nn.Linear(8, 8)
            self.mlp.gate_up_proj, self.mlp.down_proj = torch.nn.Linear(8, 12), torch.nn.Linear(6, 8)

        def forward(self, positions, hidden, residual):
            residual = hidden if residual is None else hidden + residual
            attn = self.self_attn.o_proj(torch.tanh(residual))
            residual = residual + attn
            gate, up = self.mlp.gate_up_proj(residual).chunk(2, dim=-1)
            return self.mlp.down_proj(torch.nn.functional.silu(gate) * up), residual

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([self.Layer() for _ in range(2)])

    def forward(self, positions, hidden):
        residual = None
        for layer in self.model.layers:
            hidden, residual = layer(positions, hidden, residual)
        return hidden + residual


def _worker(model, compiled: bool, layout):
    """An InterpWorkerExtension over a stand-in runner whose step layout is `layout()`:
    [(request id, recipe, prompt length, positions)]."""
    from serve.vllm_worker import InterpWorkerExtension

    class Runner:
        vllm_config = SimpleNamespace(model_config=SimpleNamespace(enforce_eager=not compiled))

        def __init__(self):
            self.model = model

        def __getattr__(self, name):  # the step's state, read when the first busy tap runs
            rows = layout()
            starts = np.cumsum([0] + [len(pos) for *_, pos in rows])
            state = {"input_batch": SimpleNamespace(req_ids=[r[0] for r in rows]),
                     "query_start_loc": SimpleNamespace(np=starts),
                     "positions": torch.tensor([p for *_, pos in rows for p in pos]),
                     "requests": {rid: SimpleNamespace(sampling_params=SimpleNamespace(
                         extra_args={"interp_recipe": rec} if rec else None), num_prompt_tokens=plen)
                         for rid, rec, plen, _ in rows}}
            return state[name]

    worker = InterpWorkerExtension()
    worker.model_runner = Runner()
    return worker


def test_taps_compiled_before_torch_compile_follow_each_steps_requests_as_eager_taps_do(monkeypatch):
    """A compiled engine's taps are installed before compilation; their op bodies must still run every step
    with that step's request layout (a graph frozen at the first step would steer the wrong tokens)."""
    from serve import vllm_taps

    g = torch.Generator().manual_seed(1)
    edits = {"a": [interp.Add("blocks.0.hook_resid_post", torch.randn(8, generator=g), 3.0),
                   interp.Clamp("blocks.1.mlp.hook_post", [1, 4], 2.0, "generated"),
                   interp.LowRank("blocks.1.mlp.up_proj", torch.randn(6, 2, generator=g), torch.randn(2, 8, generator=g))],
             "b": [interp.Add("blocks.1.hook_resid_pre", torch.randn(8, generator=g), -2.0, "prompt"),
                   interp.Scale("blocks.0.attn.hook_z", [0, 3], [0.0, 0.0])]}
    steps = [[("r1", "a", 3, [0, 1, 2]), ("r2", None, 2, [0, 1]), ("r3", "b", 2, [0, 1])],  # prefill
             [("r1", "a", 3, [3]), ("r2", None, 2, [2]), ("r3", "b", 2, [2])],  # decode: generated tokens
             [("r3", "b", 2, [3]), ("r4", "a", 4, [0, 1, 2, 3])],  # another mix
             [("r5", "b", 2, [0, 1]), ("r6", None, 1, [0])]]  # no token for recipe a's sites
    hidden = [torch.randn(sum(len(r[3]) for r in s), 8, generator=g) for s in steps]

    def run(compiled: bool) -> list[torch.Tensor]:
        model, now = _Tiny(), [0]
        worker = _worker(model, compiled, lambda: steps[now[0]])
        sites = sorted({e.site for es in edits.values() for e in es})
        if compiled:
            monkeypatch.setattr(vllm_taps, "_static", frozenset())
            vllm_taps.install_static(model, SimpleNamespace(model_config=worker.model_runner.vllm_config.model_config,
                                                            additional_config={"interp_taps": sites}))
            forward = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
        else:
            forward = model
        worker.interp_set_recipes(pack_edit_sets(edits))
        out = []
        with torch.inference_mode():
            for i, h in enumerate(hidden):
                now[0] = i
                out.append(forward(torch.zeros(len(h), dtype=torch.long), h.clone()))
        return out

    plain = [_Tiny()(torch.zeros(len(h), dtype=torch.long), h) for h in hidden]
    eager, compiled = run(False), run(True)
    for s, p, e, c in zip(steps, plain, eager, compiled):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
        at = 0
        for rid, rec, _, pos in s:
            rows = slice(at, at + len(pos))
            assert torch.equal(e[rows], p[rows]) == (rec is None), (rid, rec)  # the unsteered one alone untouched
            at += len(pos)


def test_a_compiled_engine_without_a_tap_at_an_edited_site_refuses_the_edit(monkeypatch):
    """Taps are fixed when vLLM compiles: an edit elsewhere is refused by name, never dropped."""
    from serve import vllm_taps

    worker = _worker(_Tiny(), True, lambda: [])
    monkeypatch.setattr(vllm_taps, "_static", frozenset({"blocks.1.hook_resid_post"}))
    ok = pack_edit_sets({"a": [interp.Add("blocks.1.hook_resid_post", torch.ones(8), 1.0)]})
    assert worker.interp_set_recipes(ok) == 1
    bad = pack_edit_sets({"a": [interp.Add("blocks.0.hook_resid_post", torch.ones(8), 1.0)]})
    with pytest.raises(EditError, match="no interp tap at blocks.0.hook_resid_post"):
        worker.interp_set_recipes(bad)
    with pytest.raises(EditError, match="no interp tap at blocks.0.mlp.hook_post"):
        worker.interp_capture_start(["blocks.0.mlp.hook_post"], ["all"], 4)
