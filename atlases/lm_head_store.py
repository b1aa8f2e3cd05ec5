"""An LM-head map (`probes.lm_head.LMHeadMap`) stored as a neuron atlas, in the layout that
`atlases.lm_head` describes and queries."""

from __future__ import annotations

import torch

from interp.errors import AtlasError

from .lm_head import METHOD, MODEL_SITE, site_of
from .neuron_atlas import Atlas


def atlas_tensors(lm_map) -> dict[str, torch.Tensor]:
    """An `probes.lm_head.LMHeadMap` (duck-typed) as atlas tensors keyed `"{site}/{direction}.{name}"`."""
    out = {}
    for key, t in lm_map.tensors.items():
        direction, name = key.split(".", 1)
        if name.startswith("index_"):
            out[f"{MODEL_SITE}/{key}"] = t
            continue
        for i, layer in enumerate(lm_map.layers):
            out[f"{site_of(layer)}/{key}"] = t[i].contiguous()
    return out


def lm_head_atlas(lm_map, *, model: str, revision: str | None, vocab: list[str]) -> Atlas:
    """The atlas of an LM-head map (with the decoded vocabulary, for queries)."""
    if len(vocab) < lm_map.vocab:
        raise AtlasError(f"vocabulary has {len(vocab)} strings but the map decodes {lm_map.vocab} tokens")
    return Atlas(model=model, revision=revision, sites=[site_of(l) for l in lm_map.layers], method=METHOD,
                 tensors=atlas_tensors(lm_map), params=lm_map.params(), vocab=list(vocab[: lm_map.vocab]))


def decoded_vocab(tokenizer, size: int) -> list[str]:
    """Each token id decoded on its own (" dog", not "Ġdog"), ids 0 … size − 1."""
    return [tokenizer.decode([i]) for i in range(size)]
