"""MILAN on neurons whose role we know (issue 10's acceptance; `benchmarks/milan_known_roles.py`).

Known roles on a model, found by our other probes, never by MILAN:
- language-specific neurons (`probes.language_neurons.identify` on Bible counts in en/es/fr/de),
  the most selective per language, reference "Spanish" / "French" / "German";
- concept neurons (`probes.lm_head`: the neuron whose write direction gives a noun the highest
  probability), reference the noun.

Each known neuron is paired with a random neuron of the same layer, scored against the same
reference. Exemplars come from held-out Old-Testament verses in the four languages plus the
built-in demo corpus (the learned captioner trains on the New Testament).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Sequence

import torch

import interp
from interp.corpora import Document, demo_corpus

from ..language_counts import bible_texts, language_counts
from ..language_neurons import identify
from ..lm_head import LMHeadOptions, lm_head_map, map_concept_neurons
from .describe import Describer, pmi_choice
from .probe import MilanSettings, exemplars_for, index_exemplars

LANGS = ("en", "es", "fr", "de")
NAMES = {"es": "Spanish", "fr": "French", "de": "German"}
NOUNS = ("water", "city", "house", "king", "fire")


@dataclass
class KnownNeuron:
    kind: str  # "known roles" or "random neurons"
    layer: int
    unit: int
    reference: str
    pmi: str = ""
    argmax: str = ""


def known_neurons(model: interp.Model, *, per_language: int = 4, nouns: Sequence[str] = NOUNS,
                  verses: int = 150, counts=None) -> list[KnownNeuron]:
    """Language-specific neurons (the `per_language` most selective for each of es, fr, de, or all of a
    language's specific neurons when it has fewer) and concept neurons. `counts`: language counts on
    LANGS already taken (`probes.language_counts.language_counts`), else taken on `verses` verses."""
    if counts is None:  # or given: `language_counts` on LANGS, in that order
        counts, _ = language_counts(model, bible_texts(list(LANGS), limit=verses))
    result = identify(counts)
    probs = counts.counts / counts.tokens.view(-1, 1, 1)  # [langs, layers, d_mlp] firing probability
    out = []
    for k, lang in enumerate(LANGS):
        if lang not in NAMES:
            continue
        mine = result.masks[k] & result.specific
        others = torch.cat([probs[:k], probs[k + 1:]]).amax(0)
        selectivity = torch.where(mine, probs[k] - others, -torch.inf)
        top = selectivity.flatten().topk(min(per_language, int(mine.sum())))  # fewer when fewer are specific
        for flat in top.indices.tolist():
            out.append(KnownNeuron("known roles", flat // selectivity.shape[1], flat % selectivity.shape[1],
                                   NAMES[lang]))
    if nouns:
        write = lm_head_map(model, None, LMHeadOptions(directions=("write",)))
        for noun in nouns:
            ids = model.tokenizer(" " + noun, add_special_tokens=False)["input_ids"]
            layer, unit, _ = map_concept_neurons(model, write, ids, k=1)[0]
            out.append(KnownNeuron("known roles", layer, unit, noun))
    return out


def random_partners(model: interp.Model, known: Sequence[KnownNeuron], seed: int = 0) -> list[KnownNeuron]:
    """A random neuron of the same layer for each known one, with the same reference."""
    rng = random.Random(seed)
    return [KnownNeuron("random neurons", n.layer, rng.randrange(model.adapter.d_mlp), n.reference) for n in known]


def held_out_corpus(per_language: int = 60, offset: int = 3000) -> list[Document]:
    held = bible_texts(list(LANGS), limit=per_language, offset=offset)
    return [Document(t, group=l) for l in LANGS for t in held[l]] + demo_corpus()


def known_exemplars(model: interp.Model, neurons: Sequence[KnownNeuron], settings: MilanSettings = MilanSettings(),
                    corpus: Sequence[Document] | None = None) -> list[list[str]]:
    """Each neuron's marked exemplar texts from `corpus` (default `held_out_corpus()`), all layers
    indexed in one pass: the input of every describer compared on these neurons."""
    sites = sorted({f"blocks.{n.layer}.mlp.hook_post" for n in neurons})
    index = index_exemplars(model, list(corpus or held_out_corpus()), sites, settings)
    return [exemplars_for(model, index, f"blocks.{n.layer}.mlp.hook_post", [n.unit], settings)[0].texts()
            for n in neurons]


def describe_known(describer: Describer, neurons: Sequence[KnownNeuron], exemplars: Sequence[Sequence[str]],
                   settings: MilanSettings = MilanSettings()) -> list[KnownNeuron]:
    """Each neuron with its PMI description and plain argmax filled in from its exemplars
    (`known_exemplars`); the neurons given are left as they are."""
    out = []
    for n, texts in zip(neurons, exemplars, strict=True):
        d = pmi_choice(describer, list(texts), lam=settings.lam, beam=settings.beam, max_tokens=settings.max_tokens,
                       mode=settings.mode)
        out.append(replace(n, pmi=d.text, argmax=d.argmax))
    return out


def agreement_rows(neurons: Sequence[KnownNeuron]) -> dict[str, tuple[list[str], list[str]]]:
    """{"PMI (known roles)": (descriptions, references), "argmax (known roles)": …, and for random neurons}."""
    rows: dict[str, tuple[list[str], list[str]]] = {}
    for kind in ("known roles", "random neurons"):
        for method in ("PMI", "argmax"):
            mine = [n for n in neurons if n.kind == kind]
            rows[f"{method} ({kind})"] = ([n.pmi if method == "PMI" else n.argmax for n in mine],
                                          [n.reference for n in mine])
    return rows
