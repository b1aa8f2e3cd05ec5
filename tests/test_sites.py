"""Sites: every site name reads the tensor it promises, on every supported family.

Three independent witnesses for `interp.run_with_cache`:

* a reference written here with plain PyTorch hooks (`register_forward_hook` /
  `register_forward_pre_hook` on HF submodules named explicitly below) and
  `output_hidden_states=True` — no interp code involved;
* TransformerLens 3.x `TransformerBridge` (raw HF numerics, no compatibility
  processing), whose hook names equal ours one for one;
* the adapter's weights, which must reproduce each MLP by hand.

Tiny random models (tests/tiny_models.py) cover every family in milliseconds;
the real smollm2-135m is loaded once for the module.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import subprocess

import pytest
import torch
from torch import nn
from transformers.activations import ACT2FN

import interp
from interp import LAYER_SITES, SiteError, UnsupportedArchitectureError
from interp.adapters import FAMILIES, adapter_for

from tiny_models import TINY_FAMILIES, VOCAB, random_batch, tiny_model

TOL = dict(atol=1e-5, rtol=1e-5)


def assert_same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"{what}: {m}")


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    return message


def get(root: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def text_config(hf: nn.Module):
    return getattr(hf.config, "text_config", None) or hf.config


# ----------------------------------------------------------------------------- the reference
#
# Where each piece lives, written out per family (deliberately not read from interp.adapters).
# Paths are relative to one decoder layer, except `layers`, `norm` and `head` (from the HF model).
# `attn_out` / `mlp_out`: the module whose output is what the block adds to the residual stream
# (Gemma 2/3 add the post-norm output). `act`: the config field naming the MLP activation.
# MLPs: gated (`gate`, `up`), fused gated (`gate_up` = [gate | up], Phi-3) or plain (`up` only).

_GATED = dict(o_proj="self_attn.o_proj", attn_out="self_attn", mlp="mlp", mlp_out="mlp", gate_up=None,
              gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj", act="hidden_act",
              layers="model.layers", norm="model.norm", head="lm_head")
_VLM = dict(layers="model.language_model.layers", norm="model.language_model.norm")
_NEOX = dict(o_proj="attention.dense", attn_out="attention", mlp="mlp", mlp_out="mlp", gate=None, gate_up=None,
             up="mlp.dense_h_to_4h", down="mlp.dense_4h_to_h", act="hidden_act", layers="gpt_neox.layers",
             norm="gpt_neox.final_layer_norm", head="lm_head")
SPECS: dict[str, dict] = {
    "llama": _GATED,
    "mistral": _GATED,
    "qwen2": _GATED,
    "qwen3": _GATED,
    "gemma": _GATED,
    "gemma2": dict(_GATED, attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm",
                   act="hidden_activation"),
    "gemma3": dict(_GATED, attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm",
                   act="hidden_activation"),
    "phi3": dict(_GATED, gate=None, up=None, gate_up="mlp.gate_up_proj"),
    "gpt2": dict(o_proj="attn.c_proj", attn_out="attn", mlp="mlp", mlp_out="mlp", gate=None, gate_up=None,
                 up="mlp.c_fc", down="mlp.c_proj", act="activation_function", layers="transformer.h",
                 norm="transformer.ln_f", head="lm_head"),
    "gpt_neox_parallel": _NEOX,
    "gpt_neox_sequential": _NEOX,
    "llava": dict(_GATED, **_VLM),
    "qwen2_vl": dict(_GATED, **_VLM),
}
assert set(SPECS) == set(TINY_FAMILIES)


def forward_kwargs(hf: nn.Module, batch: interp.Batch) -> dict:
    """The forward call interp makes: position ids from the attention mask (Qwen2-VL computes its own)."""
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    if hf.config.model_type not in ("qwen2_vl", "qwen2_5_vl"):
        kwargs["position_ids"] = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    return kwargs


def reference(hf: nn.Module, spec: dict, batch: interp.Batch, layers) -> dict[str, torch.Tensor]:
    """Every site of `layers`, from plain PyTorch hooks and output_hidden_states.

    Also returns, under "check.*" keys, tensors the test uses to validate the reference itself
    (the down projection's real input, the layer's real output, the model's last hidden state).
    """
    cfg = text_config(hf)
    act = ACT2FN[getattr(cfg, spec["act"])]
    n_heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    parallel = bool(getattr(cfg, "use_parallel_residual", False))
    blocks = get(hf, spec["layers"])
    n_layers = len(blocks)
    grabbed: dict = {}

    def keep_output(key):
        def hook(module, args, output):
            grabbed[key] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    def keep_input(key):
        def hook(module, args):
            grabbed[key] = args[0].detach().clone()
        return hook

    handles = []
    for l in layers:
        blk = blocks[l]
        handles += [
            get(blk, spec["o_proj"]).register_forward_pre_hook(keep_input((l, "o_in"))),
            get(blk, spec["attn_out"]).register_forward_hook(keep_output((l, "attn_out"))),
            get(blk, spec["mlp"]).register_forward_pre_hook(keep_input((l, "mlp_in"))),
            get(blk, spec["mlp_out"]).register_forward_hook(keep_output((l, "mlp_out"))),
            get(blk, spec["down"]).register_forward_pre_hook(keep_input((l, "down_in"))),
            blk.register_forward_hook(keep_output((l, "layer_out"))),
        ]
        if spec["gate_up"]:
            handles.append(get(blk, spec["gate_up"]).register_forward_hook(keep_output((l, "gate_up"))))
        else:
            handles.append(get(blk, spec["up"]).register_forward_hook(keep_output((l, "up"))))
            if spec["gate"]:
                handles.append(get(blk, spec["gate"]).register_forward_hook(keep_output((l, "gate"))))
    try:
        with torch.no_grad():
            out = hf(**forward_kwargs(hf, batch), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    hs = out.hidden_states
    assert len(hs) == n_layers + 1

    ref: dict[str, torch.Tensor] = {"check.last_hidden": hs[-1]}
    for l in layers:
        g = lambda k: grabbed[(l, k)]  # noqa: E731
        site = lambda s: f"blocks.{l}.{s}"  # noqa: E731
        resid_pre = hs[l]
        attn_out, mlp_out = g("attn_out"), g("mlp_out")
        # HF's last hidden state has the final norm applied: take the last layer's output from a hook.
        resid_post = hs[l + 1] if l + 1 < n_layers else g("layer_out")
        up = None  # the up projection's own output (gated MLPs only): mlp.hook_pre_linear
        if spec["gate_up"]:
            gate, up = g("gate_up").chunk(2, dim=-1)
            pre, post = gate, act(gate) * up
        elif spec["gate"]:
            pre, post, up = g("gate"), act(g("gate")) * g("up"), g("up")
        else:
            pre, post = g("up"), act(g("up"))
        z = g("o_in")
        ref[site("hook_resid_pre")] = resid_pre
        ref[site("attn.hook_z")] = z.unflatten(-1, (n_heads, z.shape[-1] // n_heads))
        ref[site("hook_attn_out")] = attn_out
        if not parallel:
            ref[site("hook_resid_mid")] = resid_pre + attn_out
        ref[site("mlp.hook_pre")] = pre
        if up is not None:
            ref[site("mlp.hook_pre_linear")] = up
        ref[site("mlp.hook_post")] = post
        ref[site("hook_mlp_out")] = mlp_out
        ref[site("hook_resid_post")] = resid_post
        ref[site("check.down_in")] = g("down_in")
        ref[site("check.layer_out")] = g("layer_out")
        ref[site("check.mlp_in")] = g("mlp_in")
    return ref


def check_reference(ref: dict, hf: nn.Module, spec: dict, layers) -> None:
    """The reference agrees with itself: the blocks' outputs sum to the residual stream, the
    hand-made neurons are what the down projection reads, and HF's last hidden state is normed."""
    parallel = bool(getattr(text_config(hf), "use_parallel_residual", False))
    for l in layers:
        r = lambda s: ref[f"blocks.{l}.{s}"]  # noqa: E731
        assert_same(r("mlp.hook_post"), r("check.down_in"), f"reference act(...) vs down input, layer {l}")
        assert_same(r("hook_resid_post"), r("check.layer_out"), f"reference hidden_states vs layer output, layer {l}")
        stream = r("hook_resid_pre") + r("hook_attn_out") if parallel else r("hook_resid_mid")
        assert_same(stream + r("hook_mlp_out"), r("hook_resid_post"), f"reference residual sum, layer {l}")
    last = len(get(hf, spec["layers"])) - 1
    if last in layers:
        with torch.no_grad():
            normed = get(hf, spec["norm"])(ref[f"blocks.{last}.check.layer_out"])
        assert_same(ref["check.last_hidden"], normed, "HF's last hidden state is the final-normed resid_post")


# ----------------------------------------------------------------------------- tiny models


@functools.lru_cache(maxsize=None)
def shared_tiny(family: str) -> interp.Model:
    """One tiny model per family for read-only tests (the hooks test builds fresh ones)."""
    return tiny_model(family)


@pytest.fixture(scope="module")
def batch() -> interp.Batch:
    return random_batch(lengths=(9, 6, 3))  # rows 2 and 3 are left-padded


def no_hooks(hf: nn.Module) -> list[str]:
    """Modules that still carry forward (pre-)hooks."""
    return [name or "<root>" for name, m in hf.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._forward_hooks_with_kwargs
            or m._forward_pre_hooks_with_kwargs]


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_tiny_sites_match_reference(family: str, batch: interp.Batch) -> None:
    model = shared_tiny(family)
    spec = SPECS[family]
    layers = range(model.adapter.n_layers)
    sites = model.sites()
    parallel = family == "gpt_neox_parallel"
    gated = bool(spec["gate"] or spec["gate_up"])
    per_layer = [s for s in LAYER_SITES if not (parallel and s == "hook_resid_mid")
                 and not (not gated and s == "mlp.hook_pre_linear")]
    assert model.adapter.gated == gated
    assert sites == [f"blocks.{l}.{s}" for l in layers for s in per_layer]

    got = interp.run_with_cache(model, batch, sites)
    ref = reference(model.hf, spec, batch, layers)
    check_reference(ref, model.hf, spec, layers)
    assert list(got) == sites
    for s in sites:
        assert_same(got[s], ref[s], f"{family} {s}")
        width = got[s].shape[-2] * got[s].shape[-1] if got[s].dim() == 4 else got[s].shape[-1]
        assert model.adapter.site_width(s) == width, s
    # The whole stream: no NaN from fully padded rows sneaking in.
    assert all(torch.isfinite(t).all() for t in got.values())


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_tiny_sites_one_at_a_time(family: str, batch: interp.Batch) -> None:
    """Early stopping after the only requested site does not change it (one layer-0 and one last-layer site each)."""
    model = shared_tiny(family)
    full = interp.run_with_cache(model, batch, model.sites(), stop_early=False)
    last = model.adapter.n_layers - 1
    for s in ("blocks.0.mlp.hook_post", "blocks.0.attn.hook_z", f"blocks.{last}.hook_resid_mid",
              f"blocks.{last}.hook_resid_post"):
        if s in full:
            assert_same(interp.run_with_cache(model, batch, s)[s], full[s], f"{family} {s} alone")


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_tiny_weights_reproduce_the_mlp(family: str, batch: interp.Batch) -> None:
    model = shared_tiny(family)
    a, hf, spec = model.adapter, model.hf, SPECS[family]
    cfg = text_config(hf)
    act = ACT2FN[getattr(cfg, spec["act"])]
    d_model, d_mlp = a.d_model, a.d_mlp
    assert (d_model, d_mlp) == (64, 96)
    ref = reference(hf, spec, batch, range(a.n_layers))
    for l in range(a.n_layers):
        x = ref[f"blocks.{l}.check.mlp_in"]  # the MLP's (normed) input
        mlp = get(get(hf, spec["layers"])[l], spec["mlp"])
        with torch.no_grad():
            want = mlp(x)
        read, write = a.read_weights(l, "up"), a.write_weights(l)
        assert read.shape == (d_mlp, d_model) and write.shape == (d_model, d_mlp)
        if not (spec["gate"] or spec["gate_up"]):  # GPT-2 / NeoX: biased, ungated
            with pytest.raises(SiteError):
                a.read_weights(l, "gate")
            up_mod, down_mod = get(mlp, spec["up"].split(".", 1)[1]), get(mlp, spec["down"].split(".", 1)[1])
            neurons = act(x @ read.T + up_mod.bias)
            out = neurons @ write.T + down_mod.bias
        else:
            gate = a.read_weights(l, "gate")
            assert gate.shape == (d_mlp, d_model)
            neurons = act(x @ gate.T) * (x @ read.T)
            out = neurons @ write.T
        assert_same(neurons, ref[f"blocks.{l}.mlp.hook_post"], f"{family} layer {l} neurons from read weights")
        assert_same(out, want, f"{family} layer {l} MLP from read/write weights")
    with pytest.raises(SiteError):
        a.read_weights(0, "down")

    # Unembedding: [vocab, d_model], and it is what the LM head multiplies by.
    U = a.unembed()
    assert U.shape == (VOCAB, d_model)
    h = torch.randn(5, d_model, generator=torch.Generator().manual_seed(3))
    head = get(hf, spec["head"])
    with torch.no_grad():
        assert_same(head(h), h @ U.T + (head.bias if getattr(head, "bias", None) is not None else 0),
                    f"{family} unembed")
    # Final norm: [d_model], the effective per-dimension scale (Gemma's 1 + w included).
    w = a.final_norm_weight()
    assert w.shape == (d_model,)
    norm = get(hf, spec["norm"])
    with torch.no_grad():
        y = norm(h)
        if isinstance(norm, nn.LayerNorm):
            unit = nn.functional.layer_norm(h, (d_model,), eps=norm.eps)
            y = y - norm.bias
        else:
            eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps")
            unit = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    assert_same(y, unit * w, f"{family} final norm weight")


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_no_hooks_left_after_run_with_cache(family: str, batch: interp.Batch) -> None:
    model = tiny_model(family)  # fresh: HF installs its own capture hooks on output_hidden_states
    assert no_hooks(model.hf) == []
    interp.run_with_cache(model, batch, model.sites())  # stops early at the last site
    assert no_hooks(model.hf) == []
    interp.run_with_cache(model, batch, model.sites(), stop_early=False)
    assert no_hooks(model.hf) == []
    interp.run_with_cache(model, batch, ["blocks.0.attn.hook_z", "blocks.0.mlp.hook_pre"])
    assert no_hooks(model.hf) == []
    with pytest.raises(SiteError):  # a bad site among good ones registers nothing
        interp.run_with_cache(model, batch, ["blocks.0.hook_resid_pre", "blocks.0.nope"])
    assert no_hooks(model.hf) == []
    broken = dataclasses.replace(batch, input_ids=batch.input_ids + 10 * VOCAB)  # fails inside the forward
    with pytest.raises(IndexError):
        interp.run_with_cache(model, broken, model.sites())
    assert no_hooks(model.hf) == []


GATED = [f for f in TINY_FAMILIES if SPECS[f]["gate"] or SPECS[f]["gate_up"]]


@pytest.mark.parametrize("family", GATED)
def test_tiny_up_proj_site_reads_and_clamps_like_a_plain_hook(family: str, batch: interp.Batch) -> None:
    """mlp.hook_pre_linear (issue 30) is the up projection's output on every gated family: it reads what a plain
    forward hook on up_proj (Phi-3: the second half of gate_up_proj) sees, and a Clamp there changes the model's
    output exactly as overwriting those columns of that module's output by hand does."""
    model, spec = shared_tiny(family), SPECS[family]
    hf, d_mlp = model.hf, model.adapter.d_mlp
    blocks = get(hf, spec["layers"])
    module, start = (spec["gate_up"], d_mlp) if spec["gate_up"] else (spec["up"], 0)
    neurons, values = [3, 50, d_mlp - 1], [2.5, -1.0, 0.0]
    for l in range(model.adapter.n_layers):
        site = f"blocks.{l}.mlp.hook_pre_linear"
        seen = []
        h = get(blocks[l], module).register_forward_hook(lambda m, a, o: seen.append(o.detach().clone()))
        try:
            with torch.no_grad():
                hf(**forward_kwargs(hf, batch))
        finally:
            h.remove()
        got = interp.run_with_cache(model, batch, site)[site]
        assert_same(got, seen[0][..., start:start + d_mlp], f"{family} {site} vs a hook on {module}")
        # both sites on one module, in either order, each read in full (the stop comes after both)
        pair = interp.run_with_cache(model, batch, [site, f"blocks.{l}.mlp.hook_pre"])
        assert_same(pair[site], got, f"{family} {site} beside mlp.hook_pre")

        def set_by_hand(m, a, o):
            o = o.clone()
            o[..., [start + n for n in neurons]] = torch.tensor(values)
            return o

        h = get(blocks[l], module).register_forward_hook(set_by_hand)
        try:
            with torch.no_grad():
                want = hf(**forward_kwargs(hf, batch)).logits
        finally:
            h.remove()
        with interp.edit(model, [interp.Clamp(site, neurons, values)]), torch.no_grad():
            edited = hf(**forward_kwargs(hf, batch)).logits
        with torch.no_grad():
            plain = hf(**forward_kwargs(hf, batch)).logits
        real = batch.attention_mask.bool()
        assert_same(edited[real], want[real], f"{family} clamp at {site} vs setting {module}'s output")
        assert not torch.allclose(edited[real], plain[real]), f"{family} {site}: the clamp changed nothing"


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox_parallel"])
def test_ungated_families_have_no_up_proj_site(family: str) -> None:
    model = shared_tiny(family)
    assert not any(s.endswith("mlp.hook_pre_linear") for s in model.sites())
    with pytest.raises(SiteError) as e:
        model.adapter.resolve("blocks.0.mlp.hook_pre_linear")
    assert "not gated" in one_line(e) and "blocks.0.mlp.hook_pre" in str(e.value)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", ["blocks.0.hook_resid", "blocks.0.mlp.hook_mid", "resid_pre", "blocks.x.hook_resid_pre",
                                 "blocks.-1.hook_resid_pre", "", "blocks.0.attn.hook_z.extra",
                                 "Blocks.0.hook_resid_pre"])
def test_bad_site_name(bad: str) -> None:
    model = shared_tiny("llama")
    with pytest.raises(SiteError) as e:
        model.adapter.resolve(bad)
    message = one_line(e)
    assert all(s in message for s in LAYER_SITES), message


@pytest.mark.parametrize("site", ["blocks.2.hook_resid_pre", "blocks.99.mlp.hook_post", "blocks.2.attn.hook_z"])
def test_layer_out_of_range(site: str, batch: interp.Batch) -> None:
    model = shared_tiny("gpt2")
    with pytest.raises(SiteError) as e:
        model.adapter.resolve(site)
    message = one_line(e)
    assert "0..1" in message and site.split(".")[1] in message, message
    with pytest.raises(SiteError):
        interp.run_with_cache(model, batch, site)


def _tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=48, max_position_embeddings=32))


def _tiny_mamba() -> nn.Module:
    from transformers import MambaConfig, MambaForCausalLM

    return MambaForCausalLM(MambaConfig(vocab_size=VOCAB, hidden_size=16, state_size=4, num_hidden_layers=1,
                                        expand=2, conv_kernel=2))


def _tiny_t5() -> nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=24, num_layers=1,
                                               num_heads=2))


@pytest.mark.parametrize("build, model_type", [(_tiny_bert, "bert"), (_tiny_mamba, "mamba"), (_tiny_t5, "t5")])
def test_unsupported_architecture(build, model_type: str) -> None:
    with pytest.raises(UnsupportedArchitectureError) as e:
        adapter_for(build())
    message = one_line(e)
    assert repr(model_type) in message, message
    for family in FAMILIES:
        assert family.name in message, f"{family.name} missing from: {message}"
    assert message.endswith(interp.supported_families())


def test_parallel_neox_has_no_resid_mid(batch: interp.Batch) -> None:
    par, seq = shared_tiny("gpt_neox_parallel"), shared_tiny("gpt_neox_sequential")
    assert par.adapter.parallel_residual and not seq.adapter.parallel_residual
    assert not any(s.endswith("hook_resid_mid") for s in par.sites())
    assert "blocks.1.hook_resid_mid" in seq.sites()
    with pytest.raises(SiteError) as e:
        par.adapter.resolve("blocks.0.hook_resid_mid")
    assert "parallel" in one_line(e)
    with pytest.raises(SiteError):
        interp.run_with_cache(par, batch, ["blocks.0.hook_resid_post", "blocks.0.hook_resid_mid"])
    with pytest.raises(SiteError):
        par.adapter.expand("hook_resid_mid")


# ----------------------------------------------------------------------------- smollm2-135m


@pytest.fixture(scope="module")
def smol() -> interp.Model:
    try:
        return interp.load_model("smollm2-135m")
    except interp.ModelNotFoundError as exc:
        pytest.skip(f"smollm2-135m weights not installed: {exc}")


SMOL_TEXTS = ["The quick brown fox jumps over the lazy dog.", "Bonjour le monde."]  # short: CPU time


@pytest.mark.parametrize("side", ["left", "right"])
def test_smollm2_sites_match_reference(smol: interp.Model, side: str) -> None:
    batch = interp.tokenize(smol.tokenizer, SMOL_TEXTS, padding_side=side)
    assert (batch.attention_mask == 0).any(), "the two texts should need padding"
    n = smol.adapter.n_layers
    layers = [0, 1, n - 1]
    sites = [f"blocks.{l}.{s}" for l in layers for s in LAYER_SITES]
    got = interp.run_with_cache(smol, batch, sites)
    ref = reference(smol.hf, SPECS["llama"], batch, layers)
    check_reference(ref, smol.hf, SPECS["llama"], layers)
    for s in sites:
        assert_same(got[s], ref[s], f"smollm2 {s} ({side} padding)")


def test_smollm2_no_hooks_left(smol: interp.Model) -> None:
    # HF keeps its own output-capturing hooks once output_hidden_states was used: compare snapshots.
    def snapshot():
        return {n: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for n, m in smol.hf.named_modules()}

    before = snapshot()
    batch = interp.tokenize(smol.tokenizer, SMOL_TEXTS)
    interp.run_with_cache(smol, batch, ["blocks.3.attn.hook_z", "blocks.5.hook_resid_mid", "blocks.5.mlp.hook_post"])
    interp.run_with_cache(smol, batch, ["blocks.0.hook_resid_pre"], stop_early=False)
    assert snapshot() == before


# ----------------------------------------------------------------------------- TransformerLens
#
# Bridge: TransformerBridge.boot_transformers(name, hf_model=<deep copy>, tokenizer=..., device="cpu").
# It returns raw HF numerics by default (enable_compatibility_mode() would fold norms and centre
# weights; we never call it). Its hook names equal our site names one for one:
#   blocks.L.hook_resid_pre / hook_resid_mid / hook_resid_post / hook_attn_out / hook_mlp_out,
#   blocks.L.mlp.hook_pre (gate output for gated MLPs; the gate's own hook is mlp.gate.hook_out,
#   the up projection's mlp.hook_pre_linear), blocks.L.mlp.hook_post (= mlp.out.hook_in),
#   blocks.L.attn.hook_z ([batch, seq, heads, d_head], = attn.o.hook_in split into heads).
# The bridge computes attention eagerly, so our side runs eager attention too (sdpa differs by
# ~1e-4 absolute on smollm2's large residual stream).
# Not bridged here: Llava (booting a multimodal bridge fetches a processor from the hub and, when
# that fails, pip-installs torchvision into the running environment) and Qwen2-VL (TL 3.9 has no
# Qwen2-VL adapter, only Qwen2.5-VL).

TL_TINY = ["gpt2", "qwen2", "llama", "mistral", "qwen3", "gemma", "gemma2", "gemma3", "phi3",
           "gpt_neox_parallel", "gpt_neox_sequential"]


def _tiny_tokenizer():
    """A word-level tokenizer over the tiny vocabulary, built in memory (no hub, no BOS token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    vocab["<eos>"] = vocab.pop("t2")
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="t0", unk_token="t3")


def _bridge(hf: nn.Module, tokenizer, name: str, monkeypatch):
    tl = pytest.importorskip("transformer_lens.model_bridge")
    assert not hasattr(hf.config, "vision_config"), "never boot a multimodal bridge (it pip-installs)"

    def refuse(*args, **kwargs):
        raise RuntimeError(f"TransformerLens tried to run a subprocess: {args!r}")

    monkeypatch.setattr(subprocess, "check_call", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    # The bridge wraps the modules of the model it is given: give it its own copy.
    return tl.TransformerBridge.boot_transformers(name, hf_model=copy.deepcopy(hf), tokenizer=tokenizer,
                                                  device="cpu")


def _compare_with_bridge(model: interp.Model, bridge, ids: torch.Tensor) -> None:
    ones = torch.ones_like(ids)
    batch = interp.Batch(input_ids=ids, attention_mask=ones, mask=ones.bool(), positions=ones.cumsum(-1) - 1,
                         doc_index=torch.zeros(1, dtype=torch.long), group_index=torch.zeros(1, dtype=torch.long))
    ours = interp.run_with_cache(model, batch, model.sites())
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids)
    for site in model.sites():
        assert site in cache, f"bridge has no hook {site}"
        assert_same(ours[site], cache[site].to(ours[site].dtype), f"{model.name} {site} vs TransformerLens")


@pytest.mark.parametrize("family", TL_TINY)
def test_tiny_matches_transformer_lens(family: str, monkeypatch) -> None:
    model = shared_tiny(family)
    bridge = _bridge(model.hf, _tiny_tokenizer(), model.name, monkeypatch)
    ids = torch.randint(3, VOCAB - 10, (1, 11), generator=torch.Generator().manual_seed(5))
    _compare_with_bridge(model, bridge, ids)


def test_smollm2_matches_transformer_lens(smol: interp.Model, monkeypatch) -> None:
    bridge = _bridge(smol.hf, copy.deepcopy(smol.tokenizer), "smollm2-135m", monkeypatch)
    ids = smol.tokenizer(SMOL_TEXTS[:1], return_tensors="pt").input_ids
    before = smol.hf.config._attn_implementation
    smol.hf.set_attn_implementation("eager")
    try:
        _compare_with_bridge(smol, bridge, ids)
    finally:
        smol.hf.set_attn_implementation(before)
