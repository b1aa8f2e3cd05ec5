"""Activation statistics: firing frequency, moments and top exemplars of every unit.

The job behind `interp analyze` without a probe. One streaming pass over a
corpus with three reducers per site; memory is bounded by the model, not the
corpus. The forward pass stops after the last site, so no logits are made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

import interp
from interp.capture import groups_of
from interp.exemplars import Exemplar, token_context


@dataclass
class StatsResult:
    """Per-site tensors (keyed `"{site}/{name}"`) and the documents exemplars point to.

    Names: `counts` [groups, width] tokens with act > 0; `tokens` [groups];
    `frequency` [groups, width] = counts / tokens; `mean`, `std`, `mean_abs`
    [groups, width]; `topk_values`, `topk_doc`, `topk_pos` [width, k].
    """

    sites: list[str]
    groups: list[str]
    tensors: dict[str, torch.Tensor]
    documents: list[dict]
    params: dict[str, Any] = field(default_factory=dict)

    def exemplars(self, tokenizer, site: str, unit: int, *, window: int = 8) -> list[Exemplar]:
        """The unit's top exemplars with their highlighted context."""
        docs = {d["index"]: d["text"] for d in self.documents}
        return top_exemplars(self.tensors, docs, tokenizer, site, unit, window=window,
                             max_length=self.params.get("max_length", 512))


def top_exemplars(tensors, docs: dict[int, str], tokenizer, site: str, unit: int, *,
                  window: int = 8, max_length: int = 512) -> list[Exemplar]:
    values, doc, pos = (tensors[f"{site}/topk_{n}"][unit] for n in ("values", "doc", "pos"))
    out = []
    for v, d, p in zip(values.tolist(), doc.tolist(), pos.tolist()):
        if d < 0:
            continue
        left, tok, right = token_context(tokenizer, docs[d], p, window=window, max_length=max_length)
        out.append(Exemplar(v, d, p, left, tok, right))
    return out


def activation_statistics(
    model: interp.Model,
    corpus: Sequence,
    sites: Sequence[str],
    *,
    top_k: int = 16,
    batch_size: int = 8,
    max_length: int = 256,
    progress: bool = True,
    checkpoint=None,
) -> StatsResult:
    """Stream `corpus` through `model` and summarise every unit at `sites`.

    Under an initialised torch.distributed process group, each rank captures its shard and the
    result (complete on rank 0 only) merges every rank's reducers. `checkpoint`: an
    `interp.runs.Checkpoint` to save progress to and resume from."""
    from interp.distributed import sum_over_ranks
    from interp.runs import stream

    docs = list(corpus)
    groups = groups_of(docs)
    freq, moments, top = interp.ActivationFrequency(), interp.Moments(), interp.TopK(top_k)
    with interp.capture(model, sites, [freq, moments, top], groups=groups) as run:
        stream(run, docs, batch_size=batch_size, max_length=max_length, progress=progress, checkpoint=checkpoint)
    params = {"top_k": top_k, "batch_size": batch_size, "max_length": max_length,
              "n_tokens": int(sum_over_ranks(run.tokens_seen)), "dtype": str(model.dtype).replace("torch.", "")}
    return stats_result(docs, [p.name for p in run.points], freq, moments, top, params)


def stats_result(docs: Sequence, sites: Sequence[str], freq: interp.ActivationFrequency, moments: interp.Moments,
                 top: interp.TopK, params: dict) -> StatsResult:
    """The result of filled reducers over `docs` (whichever engine filled them): per-site tensors and
    the documents the exemplars point to."""
    tensors: dict[str, torch.Tensor] = {}
    for site in sites:
        tensors[f"{site}/counts"] = freq.state[site]["counts"]
        tensors[f"{site}/tokens"] = freq.state[site]["tokens"]
        tensors[f"{site}/frequency"] = freq.rate(site).float()
        tensors[f"{site}/mean"] = moments.mean(site).float()
        tensors[f"{site}/std"] = moments.std(site).float()
        st = moments.state[site]
        tensors[f"{site}/mean_abs"] = (st["sumabs"] / st["tokens"].clamp(min=1).unsqueeze(1)).float()
        for name in ("values", "doc", "pos"):
            tensors[f"{site}/topk_{name}"] = top.state[site][name]
    used = sorted({int(i) for k, v in tensors.items() if k.endswith("/topk_doc") for i in v.unique().tolist() if i >= 0})
    documents = [{"index": i, "text": _text(docs[i]), "group": _group(docs[i])} for i in used]
    params = {**params, "groups": freq.groups, "n_documents": len(docs)}
    return StatsResult(sites=list(sites), groups=freq.groups, tensors=tensors, documents=documents, params=params)


def _text(doc) -> str:
    return doc if isinstance(doc, str) else doc.text


def _group(doc) -> str:
    return "all" if isinstance(doc, str) else (doc.group or "all")
