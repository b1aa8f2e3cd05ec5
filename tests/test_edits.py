"""The edit engine: fused equals reference, exact effects, full restoration, KV cache, recipes."""

from __future__ import annotations


import pytest
import torch

import interp
from interp.capture import forward
from interp.engine import FusedSite, PositionState, apply_reference
from interp.recipes import RecipeError, load_recipe, read_recipe, save_recipe
from model_checks import weight_hash
from tiny_models import TINY_FAMILIES, random_batch, tiny_model

KINDS = ("add", "clamp", "scale", "gate", "ablate")


def random_edits(model, seed: int, n: int = 10) -> list:
    """A random mix of every activation edit kind over a few sites and all position rules."""
    g = torch.Generator().manual_seed(seed)
    a = model.adapter
    sites = [f"blocks.0.mlp.hook_post", f"blocks.{a.n_layers - 1}.hook_resid_post", "blocks.0.attn.hook_z",
             f"blocks.{a.n_layers - 1}.mlp.hook_pre"]
    edits = []
    for i in range(n):
        site = sites[i % len(sites)]
        point = a.resolve(site)
        w = a.site_width(site)
        kind = KINDS[int(torch.randint(len(KINDS), (1,), generator=g))]
        rule = ("all", "prompt", "generated")[int(torch.randint(3, (1,), generator=g))]
        idx = torch.randperm(w, generator=g)[:5]
        if kind == "add":
            edits.append(interp.Add(site, torch.randn(w, generator=g), float(torch.rand(1, generator=g) * 3), rule))
        elif kind == "clamp":
            edits.append(interp.Clamp(site, idx, torch.randn(5, generator=g), rule))
        elif kind == "scale":
            edits.append(interp.Scale(site, idx, torch.rand(5, generator=g) * 2, rule))
        elif kind == "gate":
            edits.append(interp.Gate(site, torch.randn(w, generator=g) * 0.1, torch.rand(w, generator=g) + 0.5,
                                     temperature=0.5, hard=bool(i % 2), positions=rule))
        else:
            partial = bool(torch.rand(1, generator=g) < 0.5)  # half of them: a masked, partial projection
            edits.append(interp.Ablate(site, torch.randn(2, w, generator=g), rule,
                                       strength=float(torch.rand(1, generator=g) * 1.5) if partial else 1.0,
                                       units=idx if partial else None))
    return edits


def logits(model, batch):
    with torch.inference_mode():
        return model.hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.positions).logits


def no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.hf.modules())


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_fused_equals_reference_on_every_family(family):
    model = tiny_model(family)
    batch = random_batch()
    for seed in range(3):
        edits = random_edits(model, seed)
        # site level: the fused function equals the one-by-one reference within 1e-6
        state = PositionState(prompt_len=5, positions=torch.arange(batch.input_ids.shape[1]))
        for site in {e.site for e in edits}:
            mine = [e for e in edits if e.site == site]
            point = model.adapter.resolve(site)
            w = model.adapter.site_width(site)
            x = torch.randn(3, batch.input_ids.shape[1], w) * 2
            if point.heads:
                x = x.unflatten(-1, (point.heads, -1))
            torch.testing.assert_close(FusedSite.build(mine, w)(x, state), apply_reference(mine, x, state),
                                       rtol=0, atol=1e-6)
        # end to end
        with interp.edit(model, edits, prompt_len=5):
            fused = logits(model, batch)
        with interp.edit(model, edits, fused=False, prompt_len=5):
            ref = logits(model, batch)
        plain = logits(model, batch)
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
        assert (fused - plain).abs().max() > 1e-3  # the edits did something
    assert no_hooks(model)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_fused_under_torch_compile_equals_reference(family):
    model = tiny_model(family)
    batch = random_batch()
    edits = random_edits(model, seed=7)
    with interp.edit(model, edits, compile=True, prompt_len=5):
        compiled = logits(model, batch)
    with interp.edit(model, edits, fused=False, prompt_len=5):
        ref = logits(model, batch)
    torch.testing.assert_close(compiled, ref, rtol=1e-5, atol=1e-5)


def test_fused_equals_reference_on_smollm2(smollm2):
    batch = interp.tokenize(smollm2.tokenizer, ["The cat sat on the mat.", "Dogs bark loudly at night"])
    edits = random_edits(smollm2, seed=3, n=12)
    with interp.edit(smollm2, edits, prompt_len=4):
        fused = logits(smollm2, batch)
    with interp.edit(smollm2, edits, fused=False, prompt_len=4):
        ref = logits(smollm2, batch)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-4)


def test_clamp_and_add_match_a_hand_written_hook(smollm2):
    ids = smollm2.tokenizer("My favourite animal is the", return_tensors="pt")
    layer = smollm2.hf.model.layers[6]
    vec = torch.randn(576, generator=torch.Generator().manual_seed(0))

    def by_hand(module, args):  # down_proj input = the neurons
        x = args[0].clone()
        x[..., [10, 20]] = torch.tensor([3.0, -2.0])
        return (x,)

    def add_by_hand(module, args, output):
        return output + 2.5 * vec

    handles = [layer.mlp.down_proj.register_forward_pre_hook(by_hand),
               smollm2.hf.model.layers[9].register_forward_hook(add_by_hand)]
    try:
        with torch.inference_mode():
            expect = smollm2.hf(**ids).logits
    finally:
        for h in handles:
            h.remove()
    edits = [interp.Clamp("blocks.6.mlp.hook_post", [10, 20], [3.0, -2.0]),
             interp.Add("blocks.9.hook_resid_post", vec, 2.5)]
    with interp.edit(smollm2, edits), torch.inference_mode():
        got = smollm2.hf(**ids).logits
    assert torch.equal(got, expect)


def test_model_restored_bit_for_bit_after_exit_and_exception(smollm2):
    before = weight_hash(smollm2)
    hooks_before = {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in smollm2.hf.named_modules()}
    edits = random_edits(smollm2, seed=1) + [interp.LowRank("blocks.2.mlp.up_proj", torch.randn(1536, 2),
                                                            torch.randn(2, 576), rows=[1, 2, 3])]
    ids = smollm2.tokenizer("Hello", return_tensors="pt")
    with interp.edit(smollm2, edits), torch.inference_mode():
        smollm2.hf(**ids)
    with pytest.raises(RuntimeError, match="boom"):
        with interp.edit(smollm2, edits):
            raise RuntimeError("boom")
    assert weight_hash(smollm2) == before
    assert {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in smollm2.hf.named_modules()} == hooks_before


def test_lowrank_equals_a_weight_edit():
    model = tiny_model("llama")
    batch = random_batch()
    g = torch.Generator().manual_seed(0)
    up = model.hf.model.layers[1].mlp.up_proj
    for sel in ({"rows": [0, 5, 9]}, {"cols": [1, 2]}, {}):
        e = interp.LowRank("blocks.1.mlp.up_proj", torch.randn(up.weight.shape[0], 3, generator=g),
                           torch.randn(3, up.weight.shape[1], generator=g), **sel)
        with interp.edit(model, [e]):
            got = logits(model, batch)
        original = up.weight.detach().clone()
        with torch.no_grad():
            up.weight += e.delta()
        try:
            expect = logits(model, batch)
        finally:
            with torch.no_grad():
                up.weight.copy_(original)
        torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_generation_with_kv_cache_equals_without(smollm2):
    vec = torch.randn(576, generator=torch.Generator().manual_seed(2))
    edits = [interp.Add("blocks.8.hook_resid_post", vec, 6.0, positions="generated"),
             interp.Scale("blocks.4.mlp.hook_post", list(range(100)), 0.0, positions="prompt")]
    prompts = ["My favourite animal is the", "The weather today is"]
    cached = interp.generate(smollm2, prompts, edits, max_new_tokens=8, return_ids=True)
    uncached = interp.generate(smollm2, prompts, edits, max_new_tokens=8, use_cache=False, return_ids=True)
    plain = interp.generate(smollm2, prompts, max_new_tokens=8, return_ids=True)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)


def test_position_rules_select_prompt_or_generated(smollm2):
    seen = []
    site = "blocks.3.hook_resid_post"
    marker = torch.zeros(576)
    marker[0] = 1000.0
    edits = [interp.Add(site, marker, 1.0, positions="generated")]
    from interp.hooks import site_hook

    # layer 4's input is layer 3's output after the edit
    handle = site_hook(smollm2.adapter.resolve("blocks.4.hook_resid_pre"), lambda x: seen.append(x[..., 0].clone()))
    try:
        interp.generate(smollm2, ["One two three"], edits, max_new_tokens=3)
    finally:
        handle.remove()
    prompt_call, *steps = seen
    assert (prompt_call.abs() < 500).all()  # no edit on prompt positions
    assert all((s > 500).all() for s in steps)  # every generated position edited


def test_bad_edits_raise_typed_errors(smollm2):
    with pytest.raises(interp.EditError, match="width 1536"):
        with interp.edit(smollm2, [interp.Add("blocks.0.mlp.hook_post", torch.zeros(10))]):
            pass
    with pytest.raises(interp.EditError, match="out of range"):
        with interp.edit(smollm2, [interp.Clamp("blocks.0.mlp.hook_post", [5000], 1.0)]):
            pass
    with pytest.raises(interp.EditError, match="positions"):
        interp.Add("blocks.0.mlp.hook_post", torch.zeros(1536), positions="sometimes")
    with pytest.raises(interp.SiteError):
        with interp.edit(smollm2, [interp.Add("blocks.99.hook_resid_post", torch.zeros(576))]):
            pass
    for bad in ([], [3]):
        with pytest.raises(interp.EditError, match="prompt"):
            interp.generate(smollm2, bad)
    assert all(not m._forward_hooks for m in smollm2.hf.model.layers)


def test_recipe_round_trip_and_refusal(smollm2, tmp_path):
    edits = random_edits(smollm2, seed=5) + [interp.LowRank("blocks.1.mlp.down_proj", torch.randn(576, 2),
                                                            torch.randn(2, 1536), cols=[3, 4]),
                                             interp.Ablate("blocks.2.mlp.hook_post", torch.randn(3, 1536),
                                                           strength=0.7, units=[5, 6, 700])]
    path = save_recipe(tmp_path / "r.safetensors", edits, smollm2, provenance={"writer": "test"})
    back = load_recipe(path, smollm2)
    header, _ = read_recipe(path)
    assert header["provenance"] == {"writer": "test"} and header["model"]["id"] == "smollm2-135m"
    assert [type(e) for e in back] == [type(e) for e in edits]
    assert back[-1].strength == 0.7 and back[-1].units.tolist() == [5, 6, 700]
    ids = smollm2.tokenizer("Round trip", return_tensors="pt")
    with interp.edit(smollm2, edits), torch.inference_mode():
        a = smollm2.hf(**ids).logits
    with interp.edit(smollm2, back), torch.inference_mode():
        b = smollm2.hf(**ids).logits
    assert torch.equal(a, b)
    other = tiny_model("gpt2")
    with pytest.raises(RecipeError, match="family llama ≠ gpt2"):
        load_recipe(path, other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a recipe")
    with pytest.raises(RecipeError):
        load_recipe(tmp_path / "junk.safetensors", smollm2)


def test_partial_masked_ablation_by_hand() -> None:
    """Ablate(strength=s, units=m): h − s · m ⊙ ((h Q) Qᵀ), by hand, on both paths."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 12, generator=g)
    d = torch.randn(12, generator=g)
    e = interp.Ablate("s", d, strength=0.5, units=[1, 4, 9])
    u = d / d.norm()
    want = x.clone()
    want[..., [1, 4, 9]] -= 0.5 * (x @ u)[..., None] * u[[1, 4, 9]]
    torch.testing.assert_close(apply_reference([e], x), want)
    torch.testing.assert_close(FusedSite.build([e], 12)(x, PositionState()), want)
    full = interp.Ablate("s", d)
    assert torch.allclose(apply_reference([full], x) @ u, torch.zeros(2, 5), atol=1e-5)  # the component is gone
    with pytest.raises(interp.EditError, match="unit index out of range"):
        FusedSite.build([interp.Ablate("s", d, units=[12])], 12)
    with pytest.raises(interp.EditError, match="empty"):
        interp.Ablate("s", d, units=[])


def _word_tokenizer():
    """A whitespace word-level tokenizer over the tiny models' first ids (no file, no network)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the a cat dog sat on mat and ran far away".split()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", padding_side="left")


def _hooks_during_generate(model, edits) -> tuple[int, int]:
    """(forward pre-hooks, forward hooks) on all of the model's modules while `interp.generate` runs."""
    seen = []
    real = model.hf.generate

    def spy(**kwargs):
        mods = list(model.hf.modules())
        seen.append((sum(len(m._forward_pre_hooks) for m in mods), sum(len(m._forward_hooks) for m in mods)))
        return real(**kwargs)

    model.hf.generate = spy
    try:
        interp.generate(model, ["the cat sat", "a dog"], edits, max_new_tokens=3)
    finally:
        del model.hf.generate
    return seen[0]


def test_generate_registers_only_the_hooks_its_edits_need() -> None:
    """No edits: no hook at all (plain HF generate); Add edits without a position rule: one hook per site and no
    position pre-hook; a position rule brings the pre-hook that tells prompt from generated tokens."""
    hf = TINY_FAMILIES["llama"]()
    model = interp.Model(hf=hf, tokenizer=_word_tokenizer(), adapter=interp.adapters.adapter_for(hf),
                         name="tiny-llama", source="test")
    before = _hooks_during_generate(model, [])
    assert before == (0, 0)
    v = torch.ones(model.adapter.d_model)
    adds = [interp.Add("blocks.0.hook_resid_post", v), interp.Add("blocks.1.hook_resid_post", v),
            interp.Add("blocks.1.hook_resid_post", -v)]
    assert _hooks_during_generate(model, adds) == (0, 2)
    ruled = adds + [interp.Add("blocks.0.hook_resid_post", v, positions="generated")]
    assert _hooks_during_generate(model, ruled) == (1, 2)
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.hf.modules()) == 0
