"""A held-out capability set and its scorer: does steering break what the model could already do? (issue 31)

Three small tasks whose answer is one next token, built here from data already installed (nothing downloaded):

- `arithmetic`: three worked sums, then "a + b = " → the digit a + b (a + b ≤ 9; chance 1 in 10);
- `copying`: "Repeat: w1 w2 w3. Repeat: w1 w2" → " w3", with common English content words from `wordfreq`;
- `facts`: "The main language of France is" → " French", the country's most spoken language by CLDR's likely
  subtags (`langcodes`), the country's name from `pytz`, the language's English name from Lingua.

An item is right when the model's greedy next token is the first token of its answer as the tokenizer splits the
prompt and answer together. `Capability` scores every item of a setting in one batched forward, with the
setting's edits: a side effect that should stay near the unsteered accuracy (higher is better: bound it with a
floor in `Sweep.recommend`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import torch

TASKS: tuple[str, ...] = ("arithmetic", "copying", "facts")
SHOTS = "2 + 2 = 4\n5 + 3 = 8\n1 + 6 = 7\n"
# ISO 3166 codes whose likely language (CLDR) is that country's main language and has a plain English name in Lingua
COUNTRIES: tuple[str, ...] = ("FR", "DE", "ES", "IT", "JP", "CN", "RU", "PT", "GR", "NL", "PL", "TR", "SE", "KR",
                              "BR", "MX", "FI", "DK", "HU", "EG", "IL", "IR", "TH", "VN", "UA", "RO", "AR", "CO",
                              "AT", "US", "GB", "AU")


@dataclass(frozen=True)
class Item:
    """One capability item: the answer's first token must come next after the prompt."""

    task: str
    prompt: str
    answer: str


def arithmetic_items(n: int = 16, seed: int = 0) -> list[Item]:
    """Sums with one-digit answers after three worked examples (none of them repeated as an item)."""
    pairs = [(a, b) for a in range(10) for b in range(10) if a + b <= 9 and (a, b) not in {(2, 2), (5, 3), (1, 6)}]
    random.Random(seed).shuffle(pairs)
    return [Item("arithmetic", f"{SHOTS}{a} + {b} = ", str(a + b)) for a, b in pairs[:n]]


@lru_cache(maxsize=1)
def _content_words(n: int = 400) -> tuple[str, ...]:
    from wordfreq import top_n_list

    from interp.lexicon import FUNCTION_WORDS

    return tuple([w for w in top_n_list("en", 3000) if w.isalpha() and len(w) >= 4 and w not in FUNCTION_WORDS][:n])


def copying_items(n: int = 16, seed: int = 0) -> list[Item]:
    """A list of three common words said once, then repeated up to the last one."""
    rng, words = random.Random(seed), _content_words()
    items = []
    for _ in range(n):
        w = rng.sample(words, 3)
        items.append(Item("copying", f"Repeat: {' '.join(w)}. Repeat: {' '.join(w[:2])}", " " + w[2]))
    return items


def fact_items(n: int | None = None) -> list[Item]:
    """"The main language of <country> is" → " <language>", from pytz, langcodes and Lingua (installed data)."""
    import langcodes
    import pytz
    from lingua import IsoCode639_1, Language

    items = []
    for code in COUNTRIES[:n]:
        lang = langcodes.Language.get(f"und-{code}").maximize().language
        name = Language.from_iso_code_639_1(getattr(IsoCode639_1, lang.upper())).name.title()
        items.append(Item("facts", f"The main language of {pytz.country_names[code.lower()]} is", " " + name))
    return items


def capability_set(n: int = 16, seed: int = 0, tasks: Sequence[str] = TASKS) -> list[Item]:
    """The held-out set: `n` items of each task (facts: at most the 32 countries listed)."""
    make = {"arithmetic": lambda: arithmetic_items(n, seed), "copying": lambda: copying_items(n, seed),
            "facts": lambda: fact_items(n)}
    unknown = set(tasks) - set(make)
    if unknown:
        raise ValueError(f"unknown capability task(s) {sorted(unknown)}; known: {', '.join(TASKS)}")
    return [item for t in tasks for item in make[t]()]


def answer_ids(tokenizer, items: Sequence[Item]) -> list[int]:
    """Each item's target: the first token after the prompt's tokens in the tokenization of prompt + answer."""
    ids = []
    for it in items:
        prompt, full = tokenizer(it.prompt)["input_ids"], tokenizer(it.prompt + it.answer)["input_ids"]
        if full[:len(prompt)] != prompt or len(full) == len(prompt):  # the answer merged into the prompt's end
            full = prompt + tokenizer(it.answer, add_special_tokens=False)["input_ids"]
        ids.append(full[len(prompt)])
    return ids


@dataclass
class Capability:
    """1 where the steered model's greedy next token is the item's answer, else 0: [N items], one forward."""

    items: Sequence[Item] = field(default_factory=capability_set)
    name: str = "capability"
    kind: str = "side"
    _targets: tuple | None = field(default=None, repr=False)

    def __call__(self, out) -> torch.Tensor:
        """out: `steering.evaluate.Outputs` (its model and edits; its prompts are not used)."""
        if self._targets is None or self._targets[0] is not out.model.tokenizer:
            self._targets = (out.model.tokenizer, torch.tensor(answer_ids(out.model.tokenizer, self.items)))
        pred = out.next_logprobs([it.prompt for it in self.items]).argmax(-1).cpu()
        return (pred == self._targets[1]).double()

    def by_task(self, scores: torch.Tensor) -> dict[str, float]:
        """Accuracy per task from this scorer's per-item scores [N]."""
        tasks = [it.task for it in self.items]
        return {t: float(scores[[i for i, x in enumerate(tasks) if x == t]].mean()) for t in dict.fromkeys(tasks)}
