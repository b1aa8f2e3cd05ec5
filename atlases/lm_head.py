"""LM-head maps in the atlas: storing them and answering "which neurons mean ' dog'?".

Layout inside an atlas (method "lm-head"): per layer, under the site
`blocks.{l}.mlp.hook_post` (the neurons), tensors `{direction}.top_ids`,
`.top_logits`, `.top_probs` [d_mlp, k] and `.lse` [d_mlp]; model-wide, under
the pseudo-site `model`, the concept index `{direction}.index_neurons` /
`.index_probs` [vocab, index_k] (flat neuron = position of its layer in
`layers` · d_mlp + n). The vocabulary's decoded strings are kept with the atlas
(`vocab.json`), so queries need no tokenizer. Building such an atlas from a map:
`atlases.lm_head_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from interp.errors import AtlasError

METHOD = "lm-head"
MODEL_SITE = "model"


class AtlasLike(Protocol):
    """What the queries read of an `atlases.Atlas` (a protocol, so that this module imports no
    neuron_atlas: the Atlas's own `tokens_for` / `neurons_for` call the functions here)."""

    method: str
    sites: list[str]
    params: dict
    tensors: dict[str, torch.Tensor]
    vocab: list[str] | None

    def get(self, site: str, name: str) -> torch.Tensor: ...


@dataclass(frozen=True)
class NeuronHit:
    """One neuron found for a token: where it is and how much it means it."""

    layer: int
    neuron: int
    prob: float  # p(token) under softmax(W_U · w)
    rank: int  # the token's rank among the neuron's top tokens (0 = top), -1 if outside them

    @property
    def site(self) -> str:
        return f"blocks.{self.layer}.mlp.hook_post"


@dataclass(frozen=True)
class TokenHit:
    token: str
    token_id: int
    prob: float
    logit: float


def site_of(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


# ---------------------------------------------------------------- queries


def _check(atlas: AtlasLike, direction: str) -> None:
    if atlas.method != METHOD:
        raise AtlasError(f"this atlas was made by {atlas.method!r}; token queries need an lm-head atlas "
                         "(`interp analyze --probe lm-head`)")
    have = atlas.params.get("directions", [])
    if direction not in have:
        raise AtlasError(f"this atlas has no {direction!r} direction; it has {', '.join(have)}")
    if atlas.vocab is None:
        raise AtlasError("this atlas has no vocab.json; cannot look tokens up")


def token_ids(atlas: AtlasLike, token: str) -> list[int]:
    """Ids whose decoded string is exactly `token`; a clear error (with near misses) if none."""
    ids = [i for i, s in enumerate(atlas.vocab) if s == token]
    if ids:
        return ids
    stripped = token.strip().lower()
    near = [s for s in atlas.vocab if s.strip().lower() == stripped][:6]
    hint = f"; tokens that differ only in case or spaces: {', '.join(repr(s) for s in near)}" if near else ""
    raise AtlasError(f"{token!r} is not a single token of this model's vocabulary{hint}")


def tokens_for(atlas: AtlasLike, layer: int, neuron: int, *, direction: str = "write", k: int | None = None) -> list[TokenHit]:
    """The neuron's top tokens, most probable first."""
    _check(atlas, direction)
    site = site_of(layer)
    if site not in atlas.sites:
        raise AtlasError(f"layer {layer} is not in this atlas (layers {atlas.params.get('layers')})")
    ids = atlas.get(site, f"{direction}.top_ids")
    if not 0 <= neuron < ids.shape[0]:
        raise AtlasError(f"neuron {neuron} out of range: layer {layer} has {ids.shape[0]} neurons")
    probs, logits = atlas.get(site, f"{direction}.top_probs")[neuron], atlas.get(site, f"{direction}.top_logits")[neuron]
    n = ids.shape[1] if k is None else min(k, ids.shape[1])
    return [TokenHit(atlas.vocab[int(i)], int(i), float(p), float(g))
            for i, p, g in zip(ids[neuron, :n], probs[:n], logits[:n])]


def neurons_for(atlas: AtlasLike, token: str, *, k: int = 20, direction: str = "write") -> list[NeuronHit]:
    """The `k` neurons (over all layers) that give `token` the highest probability.

    Exact from the concept index when the atlas has one (up to its index_k);
    otherwise from the neurons whose top-k lists contain the token.
    """
    _check(atlas, direction)
    ids = token_ids(atlas, token)
    layers, d_mlp = list(atlas.params["layers"]), int(atlas.params["d_mlp"])
    key = f"{MODEL_SITE}/{direction}.index_neurons"
    candidates: dict[tuple[int, int], float] = {}
    if key in atlas.tensors:
        flat, probs = atlas.tensors[key], atlas.tensors[f"{MODEL_SITE}/{direction}.index_probs"]
        for i in ids:
            for f, p in zip(flat[i].tolist(), probs[i].tolist()):
                if f >= 0:
                    pos = (layers[f // d_mlp], f % d_mlp)
                    candidates[pos] = max(p, candidates.get(pos, 0.0))
    else:
        for layer in layers:
            top = atlas.get(site_of(layer), f"{direction}.top_ids")
            probs = atlas.get(site_of(layer), f"{direction}.top_probs")
            for i in ids:
                rows, cols = (top == i).nonzero(as_tuple=True)
                for r, c in zip(rows.tolist(), cols.tolist()):
                    candidates[(layer, r)] = max(float(probs[r, c]), candidates.get((layer, r), 0.0))
    best = sorted(candidates.items(), key=lambda kv: -kv[1])[:k]
    return [NeuronHit(l, n, p, _rank(atlas, l, n, ids, direction)) for (l, n), p in best]


def _rank(atlas: AtlasLike, layer: int, neuron: int, ids: list[int], direction: str) -> int:
    row = atlas.get(site_of(layer), f"{direction}.top_ids")[neuron].tolist()
    ranks = [row.index(i) for i in ids if i in row]
    return min(ranks) if ranks else -1


# ---------------------------------------------------------------- comparison


@dataclass
class Agreement:
    """How many neurons keep their top token between two maps."""

    direction: str
    share: float  # of all compared neurons, 0 … 1
    per_layer: dict[int, float]
    moved: list[tuple[int, int, str, str]]  # (layer, neuron, top token in a, top token in b)

    @property
    def percent(self) -> float:
        return 100.0 * self.share


def compare(a: AtlasLike, b: AtlasLike, *, direction: str = "up") -> Agreement:
    """The share of neurons whose top-1 token agrees (the paper's 75.4 % between Llama 3.1 8B base / instruct)."""
    _check(a, direction)
    _check(b, direction)
    if a.vocab != b.vocab:
        raise AtlasError("the two atlases decode different vocabularies; top tokens cannot be compared")
    layers = [l for l in a.params["layers"] if l in b.params["layers"]]
    if not layers or a.params["d_mlp"] != b.params["d_mlp"]:
        raise AtlasError("the two atlases share no layers of the same width")
    same, total, per_layer, moved = 0, 0, {}, []
    for l in layers:
        ta = a.get(site_of(l), f"{direction}.top_ids")[:, 0]
        tb = b.get(site_of(l), f"{direction}.top_ids")[:, 0]
        eq = ta == tb
        per_layer[l] = float(eq.float().mean())
        same, total = same + int(eq.sum()), total + eq.numel()
        moved += [(l, n, a.vocab[int(ta[n])], b.vocab[int(tb[n])]) for n in (~eq).nonzero().flatten().tolist()]
    return Agreement(direction, same / total, per_layer, moved)
