"""Capturing activations: whole tensors for a few inputs, or streaming reducers over a corpus.

`run_with_cache(model, inputs, sites)` returns `{site: tensor}` for one batch.
`capture(model, sites, reducers)` registers one hook per site; `run.feed(corpus)`
streams documents through the model in batches and updates every reducer in
place. The forward pass stops after the last requested site, so the
unembedding is skipped whenever no site needs it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .batching import Batch, tokenize
from .errors import ActivationError, CorpusError, SiteError
from .hooks import StopForward, hooks, site_hook
from .models import Model
from .reducers import Reducer

# Models that compute their own (multimodal) position ids.
_OWN_POSITIONS = ("qwen2_vl", "qwen2_5_vl")


def _as_docs(corpus) -> list:
    from .corpora import Document

    docs = [Document(text=d) if isinstance(d, str) else d for d in corpus]
    if not docs:
        raise CorpusError("empty corpus: no documents to run")
    if all(not d.text.strip() for d in docs):
        raise CorpusError("empty corpus: every document is blank")
    return docs


def _check_sites(model: Model, sites: Sequence[str]) -> list:
    if isinstance(sites, str):
        sites = [sites]
    if not sites:
        raise SiteError("no sites given; list them with `interp sites --model M`")
    return [model.adapter.resolve(s) for s in dict.fromkeys(sites)]


def _last_last(points: list, last) -> list:
    """`points` with the one that stops the forward registered last: sites that share a module (Phi-3's fused
    gate_up_proj holds mlp.hook_pre and mlp.hook_pre_linear) run in registration order, and none may come after
    the stop."""
    return [p for p in points if p is not last] + [last]


def forward(model: Model, batch: Batch) -> None:
    """Run the model on a batch (inference mode); a StopForward ends it quietly."""
    kwargs = dict(input_ids=batch.input_ids.to(model.device),
                  attention_mask=batch.attention_mask.to(model.device), use_cache=False)
    if model.hf.config.model_type not in _OWN_POSITIONS:
        kwargs["position_ids"] = batch.positions.to(model.device)
    try:
        with torch.inference_mode():
            model.hf(**kwargs)
    except StopForward:
        pass


def run_with_cache(
    model: Model,
    inputs: str | Sequence[str] | Batch,
    sites: str | Sequence[str],
    *,
    max_length: int = 512,
    stop_early: bool = True,
) -> dict[str, torch.Tensor]:
    """Activations at `sites` for one batch: {site: [batch, seq, width]} (hook_z: [batch, seq, heads, d_head])."""
    points = _check_sites(model, sites)
    batch = inputs if isinstance(inputs, Batch) else tokenize(
        model.tokenizer, [inputs] if isinstance(inputs, str) else list(inputs), max_length=max_length)
    cache: dict[str, torch.Tensor] = {}
    last = max(points, key=lambda p: (p.layer, p.order))

    def keep(name):
        def fn(x):
            cache[name] = x.detach().clone()

        return fn

    regs = [lambda p=p: site_hook(p, keep(p.name), stop_after=stop_early and p is last)
            for p in _last_last(points, last)]
    with hooks(regs):
        forward(model, batch)
    return {p.name: cache[p.name] for p in points}


@dataclass
class CaptureRun:
    """A live capture: feed it documents; reducers update in place."""

    model: Model
    points: list
    reducers: list[Reducer]
    groups: list[str]
    words: bool = False
    by_group: bool = True  # False: every document counts as group 'all'
    tokens_seen: int = 0
    batch: Batch | None = field(default=None, repr=False)

    def _on_site(self, name: str):
        def fn(x: torch.Tensor) -> None:
            width = x.flatten(2).shape[-1] if x.dim() > 3 else x.shape[-1]
            x = x.detach().cpu()  # one tensor object for all reducers (they share its flattening)
            # a finite fp32 sum means every value is finite (one cheap reduction; bf16's isfinite is slow)
            if (not bool(torch.isfinite(x.sum(dtype=torch.float32))) and not bool(torch.isfinite(x).all())
                    and not bool(torch.isfinite(x[self.batch.mask]).all())):
                # (padding may hold anything; only tokens that count are checked)
                docs = self.batch.doc_index.tolist()
                raise ActivationError(f"non-finite activations (NaN or inf) at {name} in documents {docs}; "
                                      "a statistic over them would be meaningless (in bfloat16, try --dtype float32)")
            for r in self.reducers:
                if name not in r.state:
                    r.bind(name, width, self.groups)
                r.update(name, x, self.batch)

        return fn

    def run_batch(self, batch: Batch) -> None:
        self.batch = batch
        forward(self.model, batch)
        self.tokens_seen += batch.n_tokens

    def feed(
        self,
        corpus,
        *,
        batch_size: int = 8,
        max_length: int = 512,
        padding_side: str | None = None,
        progress: bool = True,
        sort_by_length: bool = True,
        indices: Sequence[int] | None = None,
        skip: int = 0,
        after_batch: Callable[[int], None] | None = None,
    ) -> "CaptureRun":
        """Stream `corpus` (Documents or strings) through the model in batches.

        indices: feed only these documents (a data-parallel shard, `interp.distributed.shard`); they
        keep their index in the whole corpus, so exemplars point into it.
        skip: leave out the first `skip` batches (already counted by a run being resumed; the batch
        order is deterministic). after_batch(n): called with the number of batches done so far
        (`interp.runs` checkpoints there)."""
        docs = _as_docs(corpus)
        index = {g: i for i, g in enumerate(self.groups)}
        label = (lambda d: d.group or "all") if self.by_group else (lambda d: "all")
        unknown = {label(d) for d in docs if label(d) not in index}
        if unknown:
            raise CorpusError(f"documents have groups {sorted(map(str, unknown))} not in the run's groups {self.groups}")
        batches = plan(docs, batch_size, indices=indices, sort_by_length=sort_by_length)
        bar = tqdm(total=len(batches), initial=min(skip, len(batches)), desc="capture", unit="batch",
                   disable=not progress, leave=False)
        for n, ids in enumerate(batches):
            if n < skip:
                continue
            batch = tokenize(
                self.model.tokenizer,
                [docs[i].text for i in ids],
                prompts=[docs[i].prompt for i in ids],
                doc_index=ids,
                group_index=[index[label(docs[i])] for i in ids],
                max_length=max_length,
                padding_side=padding_side,
                words=self.words,
            )
            self.run_batch(batch)
            bar.update()
            if after_batch is not None:
                after_batch(n + 1)
        bar.close()
        return self


def plan(docs: Sequence, batch_size: int, *, indices: Sequence[int] | None = None,
         sort_by_length: bool = True) -> list[list[int]]:
    """The batches (document indices) a capture feeds: non-blank documents, longest first (stable,
    so ties keep corpus order), `batch_size` at a time. A subset made of whole batches of the plan
    plans to those same batches, which is how data-parallel shards reproduce the one-process run."""
    chosen = range(len(docs)) if indices is None else indices
    order = [i for i in chosen if docs[i].text.strip()]  # blank documents hold no tokens
    if sort_by_length:
        order.sort(key=lambda i: len(docs[i].text), reverse=True)
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def groups_of(corpus) -> list[str]:
    """Group labels of a corpus in first-seen order ('all' for unlabelled documents)."""
    return list(dict.fromkeys((d.group or "all") if not isinstance(d, str) else "all" for d in corpus))


@contextmanager
def capture(
    model: Model,
    sites: str | Sequence[str],
    reducers: Sequence[Reducer],
    *,
    groups: Sequence[str] | None = None,
    words: bool = False,
    stop_early: bool = True,
) -> Iterator[CaptureRun]:
    """Hook `sites`, yield a `CaptureRun`; hooks are removed on exit, even on error.

    `groups` fixes the group labels (e.g. languages) the reducers count by
    (`groups_of(corpus)` lists a corpus's labels); without it, all documents
    are pooled into the single group 'all'.
    """
    points = _check_sites(model, sites)
    run = CaptureRun(model, points, list(reducers), list(groups or ["all"]), words=words,
                     by_group=groups is not None)
    last = max(points, key=lambda p: (p.layer, p.order))
    regs = [lambda p=p: site_hook(p, run._on_site(p.name), stop_after=stop_early and p is last)
            for p in _last_last(points, last)]
    with hooks(regs):
        yield run
