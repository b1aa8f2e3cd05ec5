"""LM-head decoding of neurons (Davies 2025; METHODS.md §B).

Each MLP neuron has a read direction (a row of up_proj / gate_proj, or c_fc)
and a write direction (a column of down_proj / c_proj), both in the residual
basis [d_model]. Projecting one through the unembedding gives a logit per
vocabulary token; its softmax says which tokens the neuron "means".

Every neuron of every layer is mapped by chunked matrix products
([chunk, d_model] @ [d_model, vocab]) that keep only what is needed per row:
the top-k tokens with logits and probabilities, and the row's log-sum-exp
(so p(token) of any neuron can be recomputed from its logit). Optionally, a
per-token index of the neurons that give that token the highest probability,
over all layers: the concept search of step 4 ("rank all neurons by p(token)").
Memory is bounded by the chunk: one [chunk, vocab] fp32 block at a time.

Options (METHODS.md §B step 2): multiply w by the final norm's weight first
(`final_norm`), unit-normalise w first (`unit`; changes the ranking across
neurons, not a neuron's own top-k).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

import interp
from interp.errors import InterpError

DIRECTIONS = ("write", "up", "gate")  # "up"/"gate": the read direction (c_fc for ungated MLPs: "up")


@dataclass(frozen=True)
class LMHeadOptions:
    """How neurons are decoded."""

    directions: tuple[str, ...] = ("write", "up")
    final_norm: bool = True  # w ⊙ final-norm weight before W_U
    unit: bool = False  # w / ‖w‖ before W_U (after the norm weight)
    k: int = 10  # top tokens kept per neuron
    index_k: int = 32  # neurons kept per token in the concept index (0: no index)
    chunk: int = 1024  # neurons per matrix product

    def __post_init__(self) -> None:
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise InterpError(f"lm-head directions must be among {', '.join(DIRECTIONS)}, got {list(self.directions)}")
        if self.k < 1 or self.index_k < 0 or self.chunk < 1:
            raise InterpError(f"lm-head needs k ≥ 1, index_k ≥ 0, chunk ≥ 1 (got {self.k}, {self.index_k}, {self.chunk})")


@dataclass
class LMHeadMap:
    """The decoded map of one model.

    Per direction d (keys `"{d}.{name}"`):
    `top_ids` [n_layers, d_mlp, k] int64, `top_logits` / `top_probs` [n_layers, d_mlp, k],
    `lse` [n_layers, d_mlp] (log-sum-exp of the neuron's logits, so p = exp(logit − lse)),
    and with an index: `index_neurons` [vocab, index_k] (flat neuron = layer · d_mlp + n,
    best first) and `index_probs` [vocab, index_k].
    """

    layers: list[int]
    d_mlp: int
    vocab: int
    options: LMHeadOptions
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def get(self, direction: str, name: str) -> torch.Tensor:
        key = f"{direction}.{name}"
        if key not in self.tensors:
            raise InterpError(f"this map has no {key!r}; directions: {', '.join(self.options.directions)}")
        return self.tensors[key]

    def params(self) -> dict:
        return {"layers": self.layers, "d_mlp": self.d_mlp, "vocab": self.vocab,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.options).items()}}


def neuron_directions(model: interp.Model, layer: int, direction: str) -> torch.Tensor:
    """The layer's neuron directions in the residual basis, [d_mlp, d_model]."""
    a = model.adapter
    if direction == "write":
        return a.write_weights(layer).T
    if direction not in ("up", "gate"):
        raise InterpError(f"unknown direction {direction!r}; one of {', '.join(DIRECTIONS)}")
    return a.read_weights(layer, direction)


def prepare(w: torch.Tensor, norm_weight: torch.Tensor | None, unit: bool) -> torch.Tensor:
    """Apply the options to directions [n, d_model] (fp32)."""
    w = w.float()
    if norm_weight is not None:
        w = w * norm_weight.float()
    if unit:
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return w


class _Index:
    """Running top-`k` neurons per token by log-probability, merged chunk by chunk: [vocab, k]."""

    def __init__(self, vocab: int, k: int, device) -> None:
        self.logp = torch.full((k, vocab), -torch.inf, device=device)
        self.neuron = torch.full((k, vocab), -1, dtype=torch.int64, device=device)

    def update(self, logp: torch.Tensor, first: int) -> None:
        """logp: [chunk, vocab] for flat neurons first … first + chunk − 1."""
        k = self.logp.shape[0]
        vals, rows = logp.topk(min(k, logp.shape[0]), dim=0)  # [k', vocab]
        both = torch.cat([self.logp, vals])
        ids = torch.cat([self.neuron, rows + first])
        self.logp, pick = both.topk(k, dim=0)
        self.neuron = ids.gather(0, pick)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.neuron.T.contiguous(), self.logp.exp().T.contiguous()


@torch.inference_mode()
def decode_block(w: torch.Tensor, unembed_t: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Decode directions [n, d_model] through W_Uᵀ [d_model, vocab].

    Returns (logits [n, vocab], lse [n], top_logits [n, k], top_ids [n, k]).
    """
    logits = w @ unembed_t
    lse = torch.logsumexp(logits, dim=-1)
    top_logits, top_ids = logits.topk(k, dim=-1)
    return logits, lse, top_logits, top_ids


@torch.inference_mode()
def lm_head_map(model: interp.Model, layers: Sequence[int] | None = None, options: LMHeadOptions | None = None,
                *, progress: bool = False) -> LMHeadMap:
    """Decode every neuron of `layers` (default all) in every direction of `options`."""
    opts = options or LMHeadOptions()
    a = model.adapter
    layers = list(range(a.n_layers)) if layers is None else [int(l) for l in layers]
    for l in layers:
        a.layer(l)  # range check, one clear error
    unembed_t = a.unembed().detach().float().T.contiguous()  # [d_model, vocab]
    vocab = unembed_t.shape[1]
    k = min(opts.k, vocab)
    norm_weight = a.final_norm_weight().detach() if opts.final_norm else None
    out = LMHeadMap(layers=layers, d_mlp=a.d_mlp, vocab=vocab, options=opts)
    steps = [(d, l) for d in opts.directions for l in layers]
    bar = _progress(len(steps) * a.d_mlp, progress)
    for d in opts.directions:
        shape = (len(layers), a.d_mlp)
        top_ids = torch.empty(*shape, k, dtype=torch.int64)
        top_logits = torch.empty(*shape, k)
        lse_all = torch.empty(*shape)
        index = _Index(vocab, min(opts.index_k, len(layers) * a.d_mlp), unembed_t.device) if opts.index_k else None
        for i, l in enumerate(layers):
            w = prepare(neuron_directions(model, l, d).detach(), norm_weight, opts.unit)
            for s in range(0, a.d_mlp, opts.chunk):
                logits, lse, tl, ti = decode_block(w[s:s + opts.chunk], unembed_t, k)
                n = logits.shape[0]
                top_logits[i, s:s + n], top_ids[i, s:s + n], lse_all[i, s:s + n] = tl.cpu(), ti.cpu(), lse.cpu()
                if index is not None:
                    index.update(logits.sub_(lse[:, None]), i * a.d_mlp + s)
                bar.update(n)
        out.tensors[f"{d}.top_ids"] = top_ids
        out.tensors[f"{d}.top_logits"] = top_logits
        out.tensors[f"{d}.top_probs"] = (top_logits - lse_all[..., None]).exp()
        out.tensors[f"{d}.lse"] = lse_all
        if index is not None:
            neurons, probs = index.result()
            out.tensors[f"{d}.index_neurons"], out.tensors[f"{d}.index_probs"] = neurons.cpu(), probs.cpu()
    bar.close()
    return out


def brute_force_top(model: interp.Model, layer: int, neuron: int, direction: str = "write", *,
                    final_norm: bool = True, unit: bool = False, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """One neuron the slow, obvious way: softmax(W_U @ w), top-k → (ids [k], probs [k]). For checks."""
    a = model.adapter
    w = neuron_directions(model, layer, direction)[neuron].detach().float()
    if final_norm:
        w = w * a.final_norm_weight().detach().float()
    if unit:
        w = w / w.norm()
    probs = torch.softmax(a.unembed().detach().float() @ w, dim=-1)
    p, ids = probs.topk(k)
    return ids, p


def _progress(total: int, on: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="lm-head map", unit="neuron", disable=not on)
