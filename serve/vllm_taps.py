"""Taps: the places in vLLM's model where interp's code runs, the same in eager and compiled engines.

A tap is a module hook whose whole body is one custom op (`interp::tap`, `interp::tap_pair`,
`interp::tap_linear`) that edits its tensors in place. `torch.compile` cannot look inside a custom op,
so a compiled model keeps calling it: the op's Python (`dispatch`) runs every step and reads that
step's requests, exactly as in eager mode. On CUDA the ops are also vLLM splitting ops, so they run
between the captured graph pieces rather than being frozen inside one (`compile_options`).

An eager engine (re)installs taps where edits or captures are; a compiled one gets its taps once,
before compilation (the plugin wraps vLLM's model loader), at the sites it was started with
(`additional_config={"interp_taps": [...]}`), and edits elsewhere are refused by name.

Taps run in the model's order (`order`), one call each per forward; a tap whose order is not above the
last one's starts a new step, which is when the worker recomputes the tokens' keys.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from interp.edits import EditError

STREAM_SITES = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
INPUT_SITES = {"mlp.hook_post": ("mlp", "down_proj"), "attn.hook_z": ("self_attn", "o_proj")}
SITES = STREAM_SITES + tuple(INPUT_SITES)
# LowRank targets: HF projection → (vLLM module under the layer, which slice of its output)
PROJECTIONS = {"mlp.down_proj": ("mlp.down_proj", None), "self_attn.o_proj": ("self_attn.o_proj", None),
               "mlp.gate_proj": ("mlp.gate_up_proj", 0), "mlp.up_proj": ("mlp.gate_up_proj", 1),
               "self_attn.q_proj": ("self_attn.qkv_proj", 0), "self_attn.k_proj": ("self_attn.qkv_proj", 1),
               "self_attn.v_proj": ("self_attn.qkv_proj", 2)}
# where each kind runs within a layer, in forward order
KIND_ORDER = ("hook_resid_pre", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "attn.hook_z",
              "self_attn.o_proj", "hook_attn_out", "mlp.gate_proj", "mlp.up_proj", "mlp.hook_post",
              "mlp.down_proj", "hook_mlp_out", "hook_resid_post")
OPS = ("interp::tap", "interp::tap_pair", "interp::tap_linear")


class Shapes:
    """The text model's sizes from its config (vLLM's weights may be repacked or sharded)."""

    def __init__(self, config):
        cfg = getattr(config, "text_config", None) or config
        self.n_layers, self.d_model, self.d_mlp = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
        self.n_heads = cfg.num_attention_heads
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads

    def width(self, kind: str) -> int:
        return {"mlp.hook_post": self.d_mlp, "attn.hook_z": self.n_heads * self.d_head}.get(kind, self.d_model)

    def projection(self, name: str) -> tuple[tuple[int, int], list[int]]:
        """(weight shape [out, in], output slice sizes of the fused module) of an HF projection."""
        q, kv = self.n_heads * self.d_head, self.n_kv * self.d_head
        return {"mlp.down_proj": ((self.d_model, self.d_mlp), [self.d_model]),
                "self_attn.o_proj": ((self.d_model, q), [self.d_model]),
                "mlp.gate_proj": ((self.d_mlp, self.d_model), [self.d_mlp, self.d_mlp]),
                "mlp.up_proj": ((self.d_mlp, self.d_model), [self.d_mlp, self.d_mlp]),
                "self_attn.q_proj": ((q, self.d_model), [q, kv, kv]),
                "self_attn.k_proj": ((kv, self.d_model), [q, kv, kv]),
                "self_attn.v_proj": ((kv, self.d_model), [q, kv, kv])}[name]


def canonical(site: str) -> str:
    """An HF module name (`model.layers.L.<path>`) as the site it is (`blocks.L.<path>`); others as they are."""
    return "blocks." + site.removeprefix("model.layers.") if site.startswith("model.layers.") else site


def canonical_sites(sites) -> list[str]:
    return list(dict.fromkeys(canonical(s) for s in sites))


def parse_site(site: str, shapes: Shapes) -> tuple[int, str]:
    """(layer, kind) of an activation site or a LowRank module name; EditError for what vLLM lacks."""
    site = canonical(site)
    parts = site.split(".", 2)
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or \
            (parts[2] not in SITES and parts[2] not in PROJECTIONS):
        raise EditError(f"site {site!r} is not available on the vLLM engine; sites: "
                        f"blocks.L.{{{', '.join(SITES)}}}, LowRank on blocks.L.{{{', '.join(PROJECTIONS)}}}")
    layer = int(parts[1])
    if not 0 <= layer < shapes.n_layers:
        raise EditError(f"site {site!r}: layer out of range 0..{shapes.n_layers - 1}")
    return layer, parts[2]


@dataclass(frozen=True)
class Tap:
    site: str
    layer: int
    kind: str

    @functools.cached_property
    def order(self) -> int:  # read by every tap call: computed once
        return self.layer * len(KIND_ORDER) + KIND_ORDER.index(self.kind)


# The worker's handler, called as handler(tap, x, residual=None, inputs=None); None: taps do nothing.
_handler: Callable | None = None
_taps: list[Tap] = []  # index → Tap, the int each op call carries


def set_handler(handler: Callable | None) -> None:
    global _handler
    _handler = handler


def dispatch(index: int, x: torch.Tensor, residual: torch.Tensor | None = None,
             inputs: torch.Tensor | None = None) -> None:
    if _handler is not None:
        _handler(_taps[index], x, residual, inputs)


def _tap(x: torch.Tensor, index: int) -> None:
    dispatch(index, x)


def _tap_pair(hidden: torch.Tensor, residual: torch.Tensor, index: int) -> None:
    dispatch(index, hidden, residual)


def _tap_linear(inputs: torch.Tensor, out: torch.Tensor, index: int) -> None:
    dispatch(index, out, inputs=inputs)


def _nothing(*args) -> None:
    return None


_lib = torch.library.Library("interp", "DEF")  # noqa: TOR901 (lives as long as the module)
for _name, _schema, _fn in (("tap", "(Tensor(a!) x, int index) -> ()", _tap),
                            ("tap_pair", "(Tensor(a!) hidden, Tensor(b!) residual, int index) -> ()", _tap_pair),
                            ("tap_linear", "(Tensor inputs, Tensor(a!) out, int index) -> ()", _tap_linear)):
    _lib.define(_name + _schema)
    _lib.impl(_name, _fn, "CompositeExplicitAutograd")
    _lib._register_fake(_name, _nothing)


def _hook(tap: Tap, index: int):
    """The module hook of one tap: a pre-hook (resid_pre, input sites) or a forward hook."""
    if tap.kind == "hook_resid_pre":
        def pre(module, args, kwargs):
            hidden = args[1] if len(args) > 1 else kwargs["hidden_states"]
            residual = args[2] if len(args) > 2 else kwargs.get("residual")
            if residual is None:  # layer 0: the embeddings are the stream
                torch.ops.interp.tap(hidden, index)
            else:
                torch.ops.interp.tap_pair(hidden, residual, index)
        return pre
    if tap.kind in INPUT_SITES:
        def pre_input(module, args):
            torch.ops.interp.tap(args[0], index)
        return pre_input
    if tap.kind == "hook_resid_post":
        def post_pair(module, args, output):
            torch.ops.interp.tap_pair(output[0], output[1], index)
        return post_pair
    if tap.kind in PROJECTIONS:
        def post_linear(module, args, output):
            torch.ops.interp.tap_linear(args[0], output[0] if isinstance(output, tuple) else output, index)
        return post_linear

    def post(module, args, output):
        torch.ops.interp.tap(output[0] if isinstance(output, tuple) else output, index)
    return post


def install(model: torch.nn.Module, taps: list[Tap]) -> list:
    """Register `taps` (those of this pipeline stage) on vLLM's model in forward order; returns the
    handles. Replaces the index table, so handles from before must be removed first."""
    inner = model.model
    layers = inner.layers
    start, end = getattr(inner, "start_layer", 0), getattr(inner, "end_layer", len(layers))
    _taps.clear()
    handles = []
    for tap in sorted(taps, key=lambda t: t.order):
        if not start <= tap.layer < end:
            continue  # another pipeline stage holds this layer
        index = len(_taps)
        _taps.append(tap)
        block = layers[tap.layer]
        hook = _hook(tap, index)
        if tap.kind == "hook_resid_pre":
            handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
        elif tap.kind == "hook_resid_post":
            handles.append(block.register_forward_hook(hook))
        elif tap.kind in ("hook_attn_out", "hook_mlp_out"):
            handles.append((block.self_attn if tap.kind == "hook_attn_out" else block.mlp).register_forward_hook(hook))
        elif tap.kind in INPUT_SITES:
            parent, child = INPUT_SITES[tap.kind]
            handles.append(getattr(getattr(block, parent), child).register_forward_pre_hook(hook))
        else:
            parent, child = PROJECTIONS[tap.kind][0].split(".")
            handles.append(getattr(getattr(block, parent), child).register_forward_hook(hook))
    return handles


def compile_options(device_is_cuda: bool) -> dict:
    """vLLM `compilation_config` for a compiled engine with taps: on CUDA, piecewise graphs split at the
    taps (a full graph would replay the taps' first step forever); on CPU, vLLM's own (no graphs)."""
    if not device_is_cuda:
        return {}
    from vllm.config import CompilationConfig

    return {"cudagraph_mode": "PIECEWISE",
            "splitting_ops": [*CompilationConfig._attention_ops, "vllm::unified_kv_cache_update",
                              "vllm::unified_mla_kv_cache_update", *OPS]}


_static: frozenset[str] = frozenset()  # the sites tapped before compilation (a compiled engine's only taps)


def static_sites() -> frozenset[str]:
    return _static


def install_static(model: torch.nn.Module, vllm_config) -> None:
    """At model load, before vLLM compiles it: taps at `additional_config["interp_taps"]` when the engine
    will run compiled (an eager engine installs its taps as edits arrive)."""
    global _static
    sites = list((getattr(vllm_config, "additional_config", None) or {}).get("interp_taps") or [])
    if not sites or getattr(vllm_config.model_config, "enforce_eager", True):
        return
    shapes = Shapes(model.config)
    sites = canonical_sites(sites)
    install(model, [Tap(s, *parse_site(s, shapes)) for s in sites])
    _static = frozenset(sites)
