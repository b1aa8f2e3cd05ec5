"""Contrastive activation addition (ActAdd / CAA): the baseline steering writer.

A direction at one site is the mean activation over positive prompts minus
the mean over negative ones; steering adds `scale · direction` there.
Write-side only: `actadd` returns `interp.Add` edits, and `interp.edit` /
`interp.generate` apply them (a writer never registers hooks itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

import interp
from interp.batching import without_first
from interp.edits import POSITIONS, EditError

Pooling = Literal["last", "mean"]
POOLINGS: tuple[str, ...] = ("last", "mean")


@dataclass
class ContrastDirection:
    """mean(positive) − mean(negative) activations at `site`.

    vector: [width] float32 (width = d_model for residual sites, d_mlp for mlp.hook_*).
    n_pos / n_neg: prompts averaged on each side; position: "mean" or "last".
    """

    site: str
    vector: torch.Tensor
    n_pos: int
    n_neg: int
    position: str

    @property
    def norm(self) -> float:
        return float(self.vector.norm())


def _prompts(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise EditError(f"contrast direction: no {name} prompts (every one is empty)")
    return texts


def mean_activation(model: interp.Model, prompts: Sequence[str], site: str, *,
                    position: Pooling = "mean", skip_first: bool = False, batch_size: int = 8) -> torch.Tensor:
    """Mean over prompts of one pooled activation per prompt at `site`: [width] float32.

    position "mean": each prompt's mean over its real tokens (padding excluded; the first
    token, the attention sink, too when `skip_first` and the prompt has more than one token);
    "last": its last real token.
    """
    if position not in POOLINGS:
        raise EditError(f"position must be one of {', '.join(POOLINGS)}, not {position!r}")
    if site.endswith("attn.hook_z"):
        raise EditError(f"{site}: contrast directions are for [batch, seq, width] sites, not attn.hook_z")
    prompts = list(prompts)
    point = model.adapter.resolve(site)  # SiteError on a bad name
    total = torch.zeros(model.adapter.site_width(point.name), dtype=torch.float64)
    for s in range(0, len(prompts), max(1, batch_size)):
        batch = interp.tokenize(model.tokenizer, prompts[s : s + batch_size])
        acts = interp.run_with_cache(model, batch, [point.name])[point.name].double().cpu()  # [b, seq, width]
        real = batch.attention_mask.bool()  # [b, seq]
        if position == "mean":
            w = (without_first(batch.attention_mask) if skip_first else real).double().unsqueeze(-1)
            pooled = (acts * w).sum(1) / w.sum(1)  # [b, width]
        else:
            seq = torch.arange(real.shape[1]).expand_as(real)
            last = torch.where(real, seq, -1).max(1).values  # [b] index of the last real token
            pooled = acts[torch.arange(acts.shape[0]), last]
        total += pooled.sum(0)
    return (total / len(prompts)).float()


def contrast_direction(model: interp.Model, positive: Sequence[str], negative: Sequence[str], site: str, *,
                       position: Pooling = "mean", skip_first: bool = False, batch_size: int = 8) -> ContrastDirection:
    """mean activation over `positive` minus mean over `negative` at `site` (vector [width])."""
    pos, neg = _prompts(positive, "positive"), _prompts(negative, "negative")
    kw = dict(position=position, skip_first=skip_first, batch_size=batch_size)
    vec = mean_activation(model, pos, site, **kw) - mean_activation(model, neg, site, **kw)
    return ContrastDirection(site=model.adapter.resolve(site).name, vector=vec, n_pos=len(pos), n_neg=len(neg),
                             position=position)


def actadd(model: interp.Model, positive: Sequence[str], negative: Sequence[str], site: str, scale: float, *,
           positions: str = "all", position: Pooling = "mean", skip_first: bool = False,
           batch_size: int = 8) -> list[interp.Add]:
    """Edits that add `scale · (mean(positive) − mean(negative))` at `site`.

    positions: which tokens the edit acts on ("all" | "prompt" | "generated");
    position: how each prompt is pooled when building the direction ("mean" | "last");
    skip_first: leave each prompt's first token (the attention sink) out of a "mean" pool — off by
    default, as in ActAdd/CAA; on for long texts whose sink would dominate the mean.
    Returns `[interp.Add(site, vector [width], scale, positions)]`.
    """
    if positions not in POSITIONS:
        raise EditError(f"positions must be one of {', '.join(POSITIONS)}, not {positions!r}")
    d = contrast_direction(model, positive, negative, site, position=position, skip_first=skip_first,
                           batch_size=batch_size)
    return [interp.Add(d.site, d.vector, float(scale), positions)]
