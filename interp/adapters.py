"""Architecture adapters: one site name for one place, on every family.

A `Family` records where each piece of a decoder layer lives (attribute
names); an `Adapter` binds a family to one loaded model and resolves site
names (TransformerLens style, see DESIGN.md) to a `SitePoint`: the module to
hook, whether the site is that module's input or output, and how to view the
tensor (a slice of a fused projection, or split into heads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .errors import SiteError, UnsupportedArchitectureError

# Sites inside one layer, in the order the forward pass reaches them.
LAYER_SITES: tuple[str, ...] = (
    "hook_resid_pre",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)
SITE_RE = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(s) for s in LAYER_SITES) + r")$")


@dataclass(frozen=True)
class Family:
    """Where things live in one architecture family's decoder layer."""

    name: str
    model_types: tuple[str, ...]
    attn: str  # attention submodule of a layer
    o_proj: str  # its output projection (input = per-head z)
    mlp: str
    up: str  # up / c_fc / dense_h_to_4h (or fused gate_up)
    down: str  # down_proj / c_proj / dense_4h_to_h (input = the neurons)
    gate: str | None = None  # gate_proj for gated MLPs
    fused_gate_up: bool = False  # Phi-3: gate_up_proj = [gate | up]
    mlp_in_norm: str = "post_attention_layernorm"  # its input is resid_mid
    attn_out_norm: str | None = None  # Gemma 2/3: attn output goes through this norm
    mlp_out_norm: str | None = None  # Gemma 2/3: mlp output goes through this norm
    conv1d: bool = False  # GPT-2 stores weights as [in, out]
    norm_offset: float = 0.0  # Gemma RMSNorm multiplies by (1 + weight)


_LLAMA = dict(attn="self_attn", o_proj="o_proj", mlp="mlp", up="up_proj", down="down_proj", gate="gate_proj")
_GEMMA2 = dict(_LLAMA, mlp_in_norm="pre_feedforward_layernorm", attn_out_norm="post_attention_layernorm",
               mlp_out_norm="post_feedforward_layernorm", norm_offset=1.0)

FAMILIES: tuple[Family, ...] = (
    Family("llama", ("llama", "mistral", "smollm3", "olmo", "olmo2"), **_LLAMA),
    Family("qwen2", ("qwen2", "qwen2_vl_text", "qwen2_5_vl_text", "qwen2_vl", "qwen2_5_vl", "qwen3"), **_LLAMA),
    Family("gemma", ("gemma",), **dict(_LLAMA, norm_offset=1.0)),
    Family("gemma2", ("gemma2", "gemma3", "gemma3_text"), **_GEMMA2),
    Family("phi3", ("phi3",), attn="self_attn", o_proj="o_proj", mlp="mlp", up="gate_up_proj",
           down="down_proj", fused_gate_up=True),
    Family("gpt2", ("gpt2",), attn="attn", o_proj="c_proj", mlp="mlp", up="c_fc", down="c_proj",
           mlp_in_norm="ln_2", conv1d=True),
    Family("gpt_neox", ("gpt_neox",), attn="attention", o_proj="dense", mlp="mlp", up="dense_h_to_4h",
           down="dense_4h_to_h"),
)

# Paths (from the top-level HF model) to the list of decoder layers, tried in order.
_LAYER_PATHS = ("model.language_model.layers", "language_model.model.layers", "model.layers",
                "transformer.h", "gpt_neox.layers", "model.text_model.layers")
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")
_UNEMBEDS = ("lm_head", "embed_out")


def supported_families() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)


@dataclass(frozen=True)
class SitePoint:
    """Where a site's tensor appears: `module`'s input or output.

    `index` picks an element of a tuple output; `span` a slice of the last
    dimension (fused projections); `heads` reshapes the last dimension into
    [n_heads, d_head] (attn.hook_z).
    """

    name: str
    layer: int
    module: nn.Module
    kind: Literal["input", "output"]
    span: tuple[int, int] | None = None
    heads: int | None = None
    order: int = 0  # position of the site inside its layer (LAYER_SITES)


def _get(root: nn.Module, path: str) -> nn.Module | None:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _text_config(config):
    sub = getattr(config, "text_config", None)
    return sub if sub is not None else config


class Adapter:
    """Binds a `Family` to one model: site resolution and neuron weights."""

    def __init__(self, hf: nn.Module, family: Family, layers: nn.ModuleList, base: nn.Module):
        self.hf, self.family, self.layers, self.base = hf, family, layers, base
        cfg = _text_config(hf.config)
        self.config = cfg
        self.n_layers = len(layers)
        self.d_model = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
        self.n_heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
        self.d_head = int(getattr(cfg, "head_dim", None) or self.d_model // self.n_heads)
        self.d_mlp = self.write_weights(0).shape[1]
        self.parallel_residual = bool(getattr(cfg, "use_parallel_residual", False))

    # ---- modules ---------------------------------------------------------
    def layer(self, l: int) -> nn.Module:
        if not 0 <= l < self.n_layers:
            raise SiteError(f"layer {l} out of range: this model has layers 0..{self.n_layers - 1}")
        return self.layers[l]

    def attn(self, l: int) -> nn.Module:
        return getattr(self.layer(l), self.family.attn)

    def mlp(self, l: int) -> nn.Module:
        return getattr(self.layer(l), self.family.mlp)

    @property
    def final_norm(self) -> nn.Module:
        for name in _FINAL_NORMS:
            mod = getattr(self.base, name, None)
            if mod is not None:
                return mod
        raise UnsupportedArchitectureError("no final norm found")

    @property
    def unembed_module(self) -> nn.Module:
        for name in _UNEMBEDS:
            mod = getattr(self.hf, name, None)
            if mod is not None:
                return mod
        raise UnsupportedArchitectureError("no unembedding (lm_head) found")

    @property
    def gated(self) -> bool:
        """Gated MLP (act(gate) · up): has an up projection apart from the gate, hence `mlp.hook_pre_linear`."""
        return self.family.gate is not None or self.family.fused_gate_up

    # ---- sites -----------------------------------------------------------
    def site_names(self) -> list[str]:
        names = []
        for l in range(self.n_layers):
            for s in LAYER_SITES:
                if s == "hook_resid_mid" and self.parallel_residual:
                    continue
                if s == "mlp.hook_pre_linear" and not self.gated:
                    continue
                names.append(f"blocks.{l}.{s}")
        return names

    def resolve(self, site: str) -> SitePoint:
        """Map a site name to the module and direction to hook."""
        m = SITE_RE.match(site)
        if m is None:
            raise SiteError(
                f"unknown site {site!r}; sites look like blocks.<layer>.<name> with name one of: "
                + ", ".join(LAYER_SITES)
            )
        l, kind = int(m.group(1)), m.group(2)
        layer = self.layer(l)
        f = self.family
        order = LAYER_SITES.index(kind)
        attn, mlp = getattr(layer, f.attn), getattr(layer, f.mlp)
        if kind == "hook_resid_pre":
            return SitePoint(site, l, layer, "input", order=order)
        if kind == "hook_resid_post":
            return SitePoint(site, l, layer, "output", order=order)
        if kind == "attn.hook_z":
            return SitePoint(site, l, getattr(attn, f.o_proj), "input", heads=self.n_heads, order=order)
        if kind == "hook_attn_out":
            mod = getattr(layer, f.attn_out_norm) if f.attn_out_norm else attn
            return SitePoint(site, l, mod, "output", order=order)
        if kind == "hook_resid_mid":
            if self.parallel_residual:
                raise SiteError(f"{site}: this model uses parallel attention/MLP, so it has no hook_resid_mid")
            return SitePoint(site, l, getattr(layer, f.mlp_in_norm), "input", order=order)
        if kind == "mlp.hook_pre":
            if f.fused_gate_up:
                return SitePoint(site, l, getattr(mlp, f.up), "output", span=(0, self.d_mlp), order=order)
            return SitePoint(site, l, getattr(mlp, f.gate or f.up), "output", order=order)
        if kind == "mlp.hook_pre_linear":
            if not self.gated:
                raise SiteError(f"{site}: {f.name} MLPs are not gated, so there is no up projection apart from "
                                f"mlp.hook_pre (which is {f.up}'s output here); use blocks.{l}.mlp.hook_pre")
            if f.fused_gate_up:
                return SitePoint(site, l, getattr(mlp, f.up), "output", span=(self.d_mlp, 2 * self.d_mlp), order=order)
            return SitePoint(site, l, getattr(mlp, f.up), "output", order=order)
        if kind == "mlp.hook_post":
            return SitePoint(site, l, getattr(mlp, f.down), "input", order=order)
        # hook_mlp_out
        mod = getattr(layer, f.mlp_out_norm) if f.mlp_out_norm else mlp
        return SitePoint(site, l, mod, "output", order=order)

    def expand(self, spec: str, layers: str | None = None) -> list[str]:
        """Site names from a comma list of full names or per-layer names (all layers, or `layers`).

        `expand("mlp.hook_post", "0-3,10")` -> blocks.0..3 and blocks.10 mlp.hook_post.
        """
        picked = self.parse_layers(layers) if layers else list(range(self.n_layers))
        out: list[str] = []
        for item in (x.strip() for x in spec.split(",")):
            if not item:
                continue
            if item.startswith("blocks."):
                out.append(self.resolve(item).name)
            elif item in LAYER_SITES:
                out.extend(self.resolve(f"blocks.{l}.{item}").name for l in picked)
            else:
                raise SiteError(f"unknown site {item!r}; use a full name like blocks.0.mlp.hook_post "
                                f"or one of: {', '.join(LAYER_SITES)}")
        if not out:
            raise SiteError("no sites given")
        return list(dict.fromkeys(out))

    def parse_layers(self, layers: str) -> list[int]:
        """'0-3,10' -> [0, 1, 2, 3, 10], checked against the model's depth."""
        out: list[int] = []
        for part in (p.strip() for p in layers.split(",") if p.strip()):
            try:
                a, _, b = part.partition("-")
                lo, hi = int(a), int(b or a)
            except ValueError:
                raise SiteError(f"bad layer list {layers!r}: use numbers and ranges like 0-3,10") from None
            for l in range(lo, hi + 1):
                self.layer(l)  # range check
                out.append(l)
        return out

    def site_width(self, site: str) -> int:
        """Width of the site's last dim: d_mlp, n_heads·d_head (attn.hook_z) or d_model."""
        kind = self.resolve(site).name.split(".", 2)[2]
        if kind.startswith("mlp.hook"):
            return self.d_mlp
        if kind == "attn.hook_z":
            return self.n_heads * self.d_head
        return self.d_model

    # ---- weights ---------------------------------------------------------
    def _linear(self, mod: nn.Module) -> torch.Tensor:
        """Weight as [out, in], whatever the storage (Conv1D is [in, out])."""
        return mod.weight.T if self.family.conv1d else mod.weight

    def read_weights(self, l: int, which: str = "up") -> torch.Tensor:
        """Neurons' read directions, [d_mlp, d_model]: rows of up_proj (or gate_proj, c_fc)."""
        f, mlp = self.family, self.mlp(l)
        if which not in ("up", "gate"):
            raise SiteError(f"read weights are 'up' or 'gate', not {which!r}")
        if f.fused_gate_up:
            w = self._linear(getattr(mlp, f.up))
            return w[: self.d_mlp] if which == "gate" else w[self.d_mlp :]
        if which == "gate":
            if f.gate is None:
                raise SiteError(f"{f.name} MLPs are not gated; use read weights 'up'")
            return self._linear(getattr(mlp, f.gate))
        return self._linear(getattr(mlp, f.up))

    def write_weights(self, l: int) -> torch.Tensor:
        """Neurons' write directions, [d_model, d_mlp]: columns of down_proj (c_proj)."""
        return self._linear(getattr(self.mlp(l), self.family.down))

    def unembed(self) -> torch.Tensor:
        """The unembedding, [vocab, d_model]."""
        return self.unembed_module.weight

    def final_norm_weight(self) -> torch.Tensor:
        """The final norm's effective per-dimension scale, [d_model]."""
        return self.final_norm.weight + self.family.norm_offset


def adapter_for(hf: nn.Module) -> Adapter:
    """Pick the family from the config's model_type and find the decoder layers."""
    model_type = getattr(_text_config(hf.config), "model_type", None)
    family = next((f for f in FAMILIES if model_type in f.model_types), None)
    if family is None:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported families: {supported_families()}"
        )
    for path in _LAYER_PATHS:
        layers = _get(hf, path)
        if isinstance(layers, nn.ModuleList):
            base = _get(hf, path.rsplit(".", 1)[0])
            return Adapter(hf, family, layers, base)
    raise UnsupportedArchitectureError(f"{model_type}: could not find the decoder layers (tried {', '.join(_LAYER_PATHS)})")
