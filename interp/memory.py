"""Memory estimates for a capture: weights, a batch's activations, and the reducers' state.

From a model config alone (no weights needed), so a run can be sized before a large model is
downloaded: `estimate(config, dtype, sites, batch_size, max_length)`. Parameter counts follow
the Llama/Qwen/Gemma decoder layout (attention with grouped KV heads, a gated MLP, two norms per
layer); reducer state is exact, measured by allocating the statistics reducers on the `meta`
device. Activation memory is an upper-bound sketch for an inference forward pass without a KV
cache (the residual stream, the MLP's three d_mlp tensors and one layer's attention scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from .errors import InterpError

# Llama-3.1-8B's published config (the numbers that size it; the weights are not needed).
LLAMA_31_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False}

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class MemoryEstimate:
    parameters: int
    weight_bytes: int
    activation_bytes: int  # one batch's forward pass, upper bound
    reducer_bytes: int  # statistics reducers (counts, moments, top-k) at the sites

    def text(self) -> str:
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
        return (f"parameters {self.parameters / 1e9:.2f} B; weights {gib(self.weight_bytes)}; activations per batch "
                f"≤ {gib(self.activation_bytes)}; reducer state {gib(self.reducer_bytes)}; total ≈ "
                f"{gib(self.weight_bytes + self.activation_bytes + self.reducer_bytes)}")


def _get(config: Any, name: str, default=None):
    config = getattr(config, "text_config", None) or config  # a VLM's text backbone
    value = config.get(name, default) if isinstance(config, Mapping) else getattr(config, name, default)
    if value is None:
        raise InterpError(f"the config has no {name!r}; cannot estimate memory")
    return value


def parameter_count(config: Any) -> int:
    """Decoder parameters: embeddings, attention (grouped KV), gated MLP, norms, and an untied head."""
    d, f, n = _get(config, "hidden_size"), _get(config, "intermediate_size"), _get(config, "num_hidden_layers")
    heads = _get(config, "num_attention_heads")
    kv = _get(config, "num_key_value_heads", heads)
    d_head = _get(config, "head_dim", d // heads)
    vocab = _get(config, "vocab_size")
    attention = d * heads * d_head * 2 + d * kv * d_head * 2
    layer = attention + 3 * d * f + 2 * d
    head = 0 if _get(config, "tie_word_embeddings", True) else vocab * d
    return vocab * d + n * layer + d + head


def reducer_bytes(widths: Sequence[int], *, groups: int = 1, top_k: int = 16) -> int:
    """The state of `interp analyze --probe stats`'s reducers (frequency, moments, top-k) for sites of these widths."""
    from .reducers import ActivationFrequency, Moments, TopK

    total = 0
    with torch.device("meta"):
        for r in (ActivationFrequency(), Moments(), TopK(top_k)):
            for i, w in enumerate(widths):
                r.bind(f"site{i}", w, [f"g{j}" for j in range(groups)])
            total += sum(t.numel() * t.element_size() for st in r.state.values() for t in st.values())
    return total


def estimate(config: Any, *, dtype: str = "bfloat16", sites: Sequence[str] = (), batch_size: int = 8,
             max_length: int = 256, groups: int = 1, top_k: int = 16) -> MemoryEstimate:
    """Weights, one batch's activations and the reducer state of a statistics run at `sites`
    (site names `blocks.L.<name>`: mlp sites are d_mlp wide, the others d_model)."""
    if dtype not in _BYTES:
        raise InterpError(f"unknown dtype {dtype!r}; use one of {', '.join(_BYTES)}")
    size = _BYTES[dtype]
    d, f = _get(config, "hidden_size"), _get(config, "intermediate_size")
    heads = _get(config, "num_attention_heads")
    params = parameter_count(config)
    tokens = batch_size * max_length
    activations = tokens * (4 * d + 3 * f) * size + batch_size * heads * max_length * max_length * size
    widths = [f if ".mlp." in s else d for s in sites]
    return MemoryEstimate(params, params * size, activations, reducer_bytes(widths, groups=groups, top_k=top_k))
