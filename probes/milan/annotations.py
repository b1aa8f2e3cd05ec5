"""Annotated synthetic neurons: the training data of MILAN's learned captioner (our MILANNOTATIONS).

MILAN (Hernandez et al. 2022) trains its captioner on human descriptions of real neurons. No such
annotations exist offline for text neurons, so we make neurons whose role is known by construction:
a *category* of tokens (a language, a field of words, a word class) "fires" a synthetic neuron, its
exemplars are real text windows in the same format as `probes.milan.exemplars_for` gives for real
neurons (the analysed model's tokens, the firing ones marked `[[…]]`), and its annotations are what
an annotator could write for it ("Spanish words", "words about water", "commas").

Human annotators are sometimes vague, and MILAN's captioner learns that vagueness and prefers such
descriptions when unsure; the PMI rerank exists to undo it. `generic` imitates it: each annotation
is, with that probability, one of `GENERIC` ("words", "text", …) instead of a description of the
category (drawn from its own generator: the neurons and exemplars are the same at every vagueness).
The default is 0, our annotators are never vague: measured on real neurons with known roles
(`benchmarks/milan_known_roles.py`, three training seeds each), vagueness makes the descriptions
worse (PMI agreement 0.74 at 0, 0.61–0.65 at 0.15, 0.52–0.70 at 1/3), and PMI wins back part of it
(the plain argmax: 0.74; 0.57–0.65; 0.39–0.52).

The categories and lexicons are ours, written for this file; the text is the New Testament of the
packaged Bibles (books 40–66), kept apart from the Old-Testament verses the tests and benchmarks find
real neurons' exemplars in.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from interp.corpora import BIBLE_VERSIONS, bible_verses
from interp.errors import InterpError
from interp.language_id import LANGUAGE_NAMES

from .probe import Exemplar

GENERIC = ("words", "text", "various words", "common words", "parts of words")
NEW_TESTAMENT = list(range(40, 67))


# fields of English words: (descriptions an annotator writes, the words)
LEXICONS: dict[str, tuple[tuple[str, ...], str]] = {
    "water": (("water", "words about water", "rivers and seas"),
              "water waters river rivers sea seas rain flood fountain fountains well wells stream brook lake springs"),
    "fire": (("fire", "words about fire", "fire and burning"),
             "fire fires flame flames burn burned burnt burning smoke ashes coals furnace candle"),
    "king": (("king", "kings and rulers", "royalty"),
             "king kings queen prince princes throne crown reign reigned kingdom kingdoms ruler rulers"),
    "city": (("city", "cities and towns", "words about cities"),
             "city cities town towns gate gates wall walls village villages street streets"),
    "house": (("house", "houses and homes", "buildings"),
              "house houses home door doors room chamber roof tent tents dwelling household"),
    "animals": (("animals", "names of animals", "livestock"),
                "sheep ox oxen cattle goats lamb lambs horse horses camels lion lions ass dogs birds fowls serpent"),
    "family": (("family", "family members", "relatives"),
               "father mother son sons daughter daughters brother brethren sister wife husband children"),
    "body": (("body parts", "parts of the body", "the body"),
             "hand hands head eyes eye face heart feet foot mouth arm blood flesh bones"),
    "food": (("food", "food and drink", "eating"), "bread meat wine fruit corn oil honey milk eat ate eaten feast"),
    "time": (("time", "times of day", "words about time"),
             "day days night morning evening year years month hour today season"),
    "number words": (("numbers", "number words", "counting"),
                     "one two three four five six seven ten twelve hundred thousand forty"),
    "colours": (("colours", "colors", "colour words"), "white black red purple blue scarlet green"),
    "treasure": (("precious metals", "gold and silver", "treasure"),
                 "gold silver brass iron precious stones jewels treasure"),
    "land": (("land", "landscape", "mountains and fields"),
             "land earth field fields mountain mountains hill hills wilderness desert valley ground"),
    "sky": (("sky", "the sky and heavens", "sun, moon and stars"),
            "heaven heavens sun moon stars cloud clouds wind light darkness"),
    "war": (("war", "weapons and battle", "fighting"),
            "sword swords battle war army armies spear bow fight fought enemies slain"),
    "speaking": (("speaking", "verbs of speech", "saying"), "said saith spake spoke speak answered called cried told"),
    "movement": (("movement", "verbs of motion", "going and coming"),
                 "went came go come departed arose returned walked fled"),
    "death": (("death", "dying and killing", "words about death"), "death die died dead grave kill killed slew"),
    "religion": (("religion", "religious words", "worship"),
                 "god lord priest priests altar temple sacrifice offering prayer holy"),
    "emotions": (("emotions", "feelings", "words about feelings"),
                 "love fear joy anger wrath sorrow glad afraid weep wept"),
    "person names": (("person names", "names of people", "names"),
                     "moses david abraham jacob isaac joseph aaron saul solomon paul peter jesus noah adam john"),
    "place names": (("place names", "names of places", "countries and cities"),
                    "egypt israel jordan babylon judah canaan samaria syria galilee jerusalem"),
    "clothing": (("clothing", "clothes", "garments"), "garment garments clothes robe linen coat raiment sackcloth"),
}

# word classes and characters: (descriptions, a test on one token's text)
CLASSES: dict[str, tuple[tuple[str, ...], Callable[[str], bool]]] = {
    "commas": (("commas", "the comma", "punctuation"), lambda t: t.strip() == ","),
    "periods": (("periods", "ends of sentences", "full stops"), lambda t: t.strip() == "."),
    "colons": (("colons and semicolons", "colons", "punctuation"), lambda t: t.strip() in (":", ";")),
    "capitals": (("capitalized words", "words with capital letters", "proper nouns"),
                 lambda t: bool(re.fullmatch(r"\s?[A-Z][a-z]+", t))),
    "pronouns": (("pronouns", "personal pronouns", "he, she and they"),
                 lambda t: t.strip().lower() in {"he", "him", "his", "she", "her", "they", "them", "their", "i", "me",
                                                  "my", "we", "us", "you", "thou", "thee"}),
    "and": (("the word and", "conjunctions", "and"), lambda t: t.strip().lower() in {"and", "but", "or"}),
    "articles": (("articles", "the word the", "determiners"), lambda t: t.strip().lower() in {"the", "a", "an"}),
    "prepositions": (("prepositions", "words like of and in", "function words"),
                     lambda t: t.strip().lower() in {"of", "in", "to", "unto", "upon", "from", "with", "into", "for",
                                                      "by"}),
    "negation": (("negation", "not and no", "negative words"),
                 lambda t: t.strip().lower() in {"not", "no", "nor", "neither", "never"}),
    "archaic": (("archaic words", "old english", "thee and thou"),
                lambda t: t.strip().lower() in {"thou", "thee", "thy", "thine", "hath", "doth", "shalt", "ye", "art"}),
}


@dataclass
class AnnotatedNeuron:
    """One synthetic neuron: its category, its exemplar texts (marked) and its annotations."""

    category: str
    exemplars: list[str]
    annotations: list[str]


@dataclass
class _Doc:
    tokens: list[str]  # the analysed model's tokens, decoded one by one
    words: list[str]  # the lower-cased word each token belongs to ("" for none)


def _docs(tokenizer, texts: Sequence[str], max_length: int) -> list[_Doc]:
    """Each text's tokens (decoded one by one, as exemplars show them) and the word each belongs to;
    the texts are tokenized in one batch and each token id decoded once."""
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                    max_length=max_length)
    pieces: dict[int, str] = {}
    out = []
    for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        spans = [(m.start(), m.end(), m.group().lower()) for m in re.finditer(r"\w+", text)]
        words = [next((w for s, e, w in spans if s <= a < e or s < b <= e), "") for a, b in offsets]
        for i in ids:
            if i not in pieces:
                pieces[i] = tokenizer.decode([i])
        out.append(_Doc([pieces[i] for i in ids], words))
    return out


def _exemplar(doc: _Doc, fires: list[bool], window: int, rng: random.Random) -> Exemplar:
    """The window around one firing token (the 'maximum'; `fires` has at least one), its firing tokens marked."""
    pos = rng.choice([i for i, f in enumerate(fires) if f])
    lo, hi = max(0, pos - window), min(len(doc.tokens), pos + window + 1)
    return Exemplar(-1, 1.0, doc.tokens[lo:hi], fires[lo:hi])


def _annotations(descriptions: Sequence[str], n: int, generic: float, rng: random.Random,
                 vague: random.Random) -> list[str]:
    """`n` annotations: each a random one of `descriptions`, or with chance `generic` one of GENERIC.
    `rng` draws the same numbers whatever `generic` is (the vague words come from `vague`), so the
    neurons and their exemplars are the same for every vagueness, and so are their MiniLM codes."""
    out = []
    for _ in range(n):
        u, d = rng.random(), rng.choice(descriptions)
        out.append(vague.choice(GENERIC) if u < generic else d)
    return out


@dataclass
class AnnotationSettings:
    """How the synthetic annotated neurons are made (the captioner's training set)."""

    per_category: int = 20  # neurons per language, word field and word class
    k: int = 15  # exemplars per neuron (`MilanSettings.k`)
    window: int = 8  # tokens each side of the 'maximum' (`MilanSettings.window`)
    annotators: int = 3  # annotations per neuron
    generic: float = 0.0  # chance that an annotation is a vague one from GENERIC (imitating human annotators)
    languages: tuple[str, ...] = tuple(LANGUAGE_NAMES)
    verses: int = 1500  # New-Testament verses read per language
    max_length: int = 128
    seed: int = 0


def synthetic_neurons(tokenizer, settings: AnnotationSettings = AnnotationSettings()) -> list[AnnotatedNeuron]:
    """`per_category` neurons for every language, word field and word class, each with `k` exemplars
    tokenized by `tokenizer` (the analysed model's, so they look like its real exemplars) and
    `annotators` annotations."""
    s = settings
    if not 0.0 <= s.generic <= 1.0 or s.per_category < 1 or s.k < 1 or s.annotators < 1:
        raise InterpError(f"bad annotation settings: {s}")
    rng, vague = random.Random(s.seed), random.Random(f"vague {s.seed}")
    per_category, k, window, verses, max_length = s.per_category, s.k, s.window, s.verses, s.max_length
    unknown = [l for l in s.languages if l not in LANGUAGE_NAMES]
    if unknown:
        raise InterpError(f"no Bible to make {', '.join(unknown)} neurons from (have {', '.join(LANGUAGE_NAMES)})")
    langs = [l for l in s.languages if any(v.lang == l for v in BIBLE_VERSIONS.values())]
    english = _docs(tokenizer, [d.text for d in bible_verses("en", books=NEW_TESTAMENT, limit=verses)], max_length)
    out: list[AnnotatedNeuron] = []

    def make(category: str, descriptions: Sequence[str], docs: list[_Doc], fires: Callable[[_Doc], list[bool]]):
        pool = [(d, f) for d in docs if any(f := fires(d))]
        for _ in range(per_category if len(pool) >= k else 0):
            exs = [_exemplar(d, f, window, rng) for d, f in rng.sample(pool, k)]  # the pool's docs all fire
            out.append(AnnotatedNeuron(category, [e.text() for e in exs],
                                       _annotations(descriptions, s.annotators, s.generic, rng, vague)))

    for lang in langs:
        name = LANGUAGE_NAMES[lang]
        docs = english if lang == "en" else _docs(
            tokenizer, [d.text for d in bible_verses(lang, books=NEW_TESTAMENT, limit=verses)], max_length)

        def some_tokens(d: _Doc) -> list[bool]:  # a language neuron fires on some of the language's tokens
            p = rng.uniform(0.15, 0.6)
            return [rng.random() < p for _ in d.tokens]

        make(f"language: {name}", (f"{name} words", f"{name} text", f"words in {name}"), docs, some_tokens)
    for name, (descriptions, words) in LEXICONS.items():
        lexicon = set(words.split())
        make(f"field: {name}", descriptions, english, lambda d: [w in lexicon for w in d.words])
    for name, (descriptions, test) in CLASSES.items():
        make(f"class: {name}", descriptions, english, lambda d: [test(t) for t in d.tokens])
    rng.shuffle(out)
    return out
