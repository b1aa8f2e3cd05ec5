"""HFTP stimuli (An et al. 2025; METHODS.md §E step 1): four-word sentences with a [2][2] phrase structure.

A sentence is two two-word phrases, [Adj N][V N] in English ("young boys eat bread") and
[N Adj][V N] in Spanish ("niños felices comen pan"); word lists are ours. Presented one
word per sample (4 Hz), a stream of sentences has structure at the sentence rate (1 Hz)
and the phrase rate (2 Hz) and nowhere else, except in the model's head.

- `experiment`: streams of sentences in shuffled order (`n_streams` streams, each a seeded
  shuffle), as `Condition` (a list of streams of words + the rates that are tagged);
- `control`: the same sentences with the words shuffled within each sentence so that no
  original neighbouring pair survives — the same words at the same rate, no syntax;
- `phrases`: streams of two-word phrases only (phrase rate, no sentence rate) — with
  `random_words` (no structure at all) they make the RSA conditions (Sentence, Phrase,
  Random);
- `natural`: n-word sentences from a natural corpus, tagged at 4/n Hz (sentence) and
  4/k Hz for k = 2 … n − 1 (phrases).

Every stream is reproducible from its seed (`random.Random(seed)`).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Sequence

from interp.errors import InterpError

WORD_RATE = 4.0  # Hz: one word every 0.25 s

# [first phrase (2 words)][second phrase (2 words)]: (w1 list, w2 list, w3 list, w4 list)
LEXICON: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {
    "en": (
        ["young", "old", "happy", "small", "tall", "busy", "clever", "hungry", "quiet", "brave", "lazy", "kind"],
        ["boys", "girls", "dogs", "cats", "farmers", "birds", "children", "cooks", "students", "doctors",
         "sailors", "painters"],
        ["eat", "love", "watch", "find", "carry", "need", "sell", "buy", "build", "like", "want", "bring"],
        ["bread", "apples", "music", "water", "books", "songs", "toys", "houses", "flowers", "letters", "boats",
         "cakes"],
    ),
    "es": (
        ["niños", "perros", "gatos", "pájaros", "hombres", "mujeres", "vecinos", "médicos", "alumnos", "pintores",
         "marineros", "cocineros"],
        ["felices", "grandes", "jóvenes", "alegres", "pobres", "amables", "valientes", "fuertes", "tristes",
         "inteligentes", "humildes", "libres"],
        ["comen", "buscan", "miran", "compran", "venden", "llevan", "necesitan", "encuentran", "quieren", "traen",
         "construyen", "prefieren"],
        ["pan", "libros", "agua", "música", "flores", "frutas", "coches", "juguetes", "cartas", "manzanas",
         "barcos", "pasteles"],
    ),
}


@dataclass
class Condition:
    """Streams of words [n_streams][n_words], presented at WORD_RATE, and the rates tagged (Hz)."""

    name: str
    streams: list[list[str]]
    rates: dict[str, float] = field(default_factory=dict)  # e.g. {"sentence": 1.0, "phrase": 2.0}

    @property
    def n_words(self) -> int:
        return len(self.streams[0])


def _lexicon(lang: str) -> tuple[list[str], ...]:
    if lang not in LEXICON:
        raise InterpError(f"no HFTP word lists for {lang!r}; have {', '.join(LEXICON)}")
    return LEXICON[lang]


def sentences(lang: str, n: int, seed: int = 0) -> list[tuple[str, ...]]:
    """`n` distinct four-word sentences drawn from the lexicon."""
    slots = _lexicon(lang)
    total = 1
    for s in slots:
        total *= len(s)
    if not 0 < n <= total:
        raise InterpError(f"can make 1 … {total} distinct {lang} sentences, not {n}")
    rng = random.Random(seed)
    out: dict[tuple[str, ...], None] = {}
    while len(out) < n:
        out.setdefault(tuple(rng.choice(s) for s in slots), None)
    return list(out)


def _no_neighbours(order: Sequence[int]) -> bool:
    """True when no original neighbouring pair (i, i+1) stays adjacent in that order."""
    return all(b != a + 1 for a, b in zip(order, order[1:]))


def word_shuffle(sentence: Sequence[str], rng: random.Random) -> tuple[str, ...]:
    """The sentence's words in a random order in which no original neighbouring pair survives
    (beyond 7 words, by redrawing shuffles: the orders are too many to list)."""
    if len(sentence) > 7:
        order = list(range(len(sentence)))
        while True:
            rng.shuffle(order)
            if _no_neighbours(order):
                return tuple(sentence[i] for i in order)
    orders = [p for p in itertools.permutations(range(len(sentence))) if _no_neighbours(p)]
    if not orders:
        raise InterpError(f"a {len(sentence)}-word sentence has no order without its neighbouring pairs")
    return tuple(sentence[i] for i in rng.choice(orders))


def _streams(units: Sequence[Sequence[str]], n_streams: int, seed: int, shuffle_words: bool = False) -> list[list[str]]:
    streams = []
    for s in range(n_streams):
        rng = random.Random(seed * 100_003 + s)
        order = list(units)
        rng.shuffle(order)
        if shuffle_words:
            order = [word_shuffle(u, rng) for u in order]
        streams.append([w for u in order for w in u])
    return streams


def experiment(lang: str = "en", n_sentences: int = 60, n_streams: int = 100, seed: int = 0) -> Condition:
    """Sentence streams: the same `n_sentences` sentences in `n_streams` shuffled orders."""
    sents = sentences(lang, n_sentences, seed)
    return Condition("sentence", _streams(sents, n_streams, seed),
                     {"sentence": WORD_RATE / 4, "phrase": WORD_RATE / 2})


def control(lang: str = "en", n_sentences: int = 60, n_streams: int = 100, seed: int = 0,
            shuffle_seed: int | None = None) -> Condition:
    """The experiment's sentences (same `seed`) with their words shuffled (no neighbouring pair kept);
    `shuffle_seed` draws another independent control of the same sentences."""
    sents = sentences(lang, n_sentences, seed)
    shuffle = seed + 1 if shuffle_seed is None else shuffle_seed
    return Condition("control", _streams(sents, n_streams, shuffle, shuffle_words=True),
                     {"sentence": WORD_RATE / 4, "phrase": WORD_RATE / 2})


def phrases(lang: str = "en", n_phrases: int = 120, n_streams: int = 100, seed: int = 0) -> Condition:
    """Streams of two-word phrases (the sentences' first and second halves as separate units)."""
    halves = list(dict.fromkeys(h for s in sentences(lang, n_phrases, seed) for h in (s[:2], s[2:])))[:n_phrases]
    return Condition("phrase", _streams(halves, n_streams, seed + 2), {"phrase": WORD_RATE / 2})


def random_words(lang: str = "en", n_words: int = 240, n_streams: int = 100, seed: int = 0) -> Condition:
    """Streams of the lexicon's words in random order: no structure at any rate."""
    pool = [w for slot in _lexicon(lang) for w in slot]
    streams = []
    for s in range(n_streams):
        rng = random.Random(seed * 100_003 + 7919 + s)
        streams.append([rng.choice(pool) for _ in range(n_words)])
    return Condition("random", streams, {})


def _natural_sentences(texts: Sequence[str], n: int, n_sentences: int, seed: int) -> list[tuple[str, ...]]:
    if n < 2:
        raise InterpError("natural n-word sentences need n ≥ 2")
    pool = []
    for t in texts:
        for s in t.replace("!", ".").replace("?", ".").split("."):
            words = s.split()
            if len(words) == n:
                pool.append(tuple(words))
    pool = list(dict.fromkeys(pool))
    if len(pool) < n_sentences:
        raise InterpError(f"only {len(pool)} distinct {n}-word sentences in the texts; need {n_sentences}")
    return random.Random(seed).sample(pool, n_sentences)


def natural_rates(n: int) -> dict[str, float]:
    """The rates an n-word sentence stream is tagged at: sentence 4/n Hz, phrase{k} 4/k Hz for k = 2 … n − 1."""
    return {"sentence": WORD_RATE / n, **{f"phrase{k}": WORD_RATE / k for k in range(2, n)}}


def natural(texts: Sequence[str], n: int, *, n_sentences: int = 60, n_streams: int = 100,
            seed: int = 0) -> Condition:
    """Streams of n-word sentences cut from natural text (sentences of exactly n words, split at . ! ?)."""
    chosen = _natural_sentences(texts, n, n_sentences, seed)
    return Condition(f"natural{n}", _streams(chosen, n_streams, seed), natural_rates(n))


def natural_control(texts: Sequence[str], n: int, *, n_sentences: int = 60, n_streams: int = 100, seed: int = 0,
                    shuffle_seed: int | None = None) -> Condition:
    """`natural`'s sentences (same `seed`) with their words shuffled so that no neighbouring pair survives:
    the same words at the same rate, no syntax (as `control` for the four-word sentences)."""
    chosen = _natural_sentences(texts, n, n_sentences, seed)
    shuffle = seed + 1 if shuffle_seed is None else shuffle_seed
    return Condition(f"natural{n}-control", _streams(chosen, n_streams, shuffle, shuffle_words=True),
                     natural_rates(n))
