"""Does a steering recipe make the model answer in a target language, and at what fluency cost?

For each variant (a name, a strength, its edits) on held-out neutral English prompts:

- share: continuations identified as the target language (Lingua, `interp.language_id`);
- ppl: perplexity of the continuation under the *unsteered* model, given its English prompt;
- distinct-2: distinct word bigrams / all bigrams (degenerate loops score a low perplexity,
  so they are shown rather than hidden).

Two reference rows frame the perplexity: the unsteered continuations (English) and the
language-matched reference — the unsteered model's own continuations of the same prompts
written in the target language, scored after the English prompt exactly like the steered
text. Any continuation in another language than the prompt pays a switching cost under the
unsteered model, so the fluency cost of steering is the ratio to the matched reference;
the ratio to the English continuations is printed too.

Generation defaults: greedy, 32 new tokens, repetition penalty 1.3 (greedy decoding of a
small model otherwise loops, and loops look fluent to perplexity).

The numbers come from the harness's pieces (`steering.evaluate`, issue 31): every prompt of a row
generated in one batch, the share from `language_hits` (as the `LanguageShare` scorer), the
perplexity from one batched forward (`continuation_token_nll`, as `Perplexity`; pooled over the
row's tokens here) and `distinct2` (over the row's texts together here, per text in `Distinct2`).
What is this module's own: the table, its matched reference and the variant list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import interp
from interp.errors import InterpError

from .evaluate import continuation_token_nll, distinct2, language_hits

__all__ = ["GENERATION", "LanguageSteeringTable", "Row", "continuation_perplexity", "distinct2", "evaluate"]

GENERATION = {"max_new_tokens": 32, "repetition_penalty": 1.3}


def continuation_perplexity(model: interp.Model, prompts: Sequence[str], continuations: Sequence[str]) -> float:
    """exp(mean NLL) over all the continuations' tokens given their prompts (token-weighted across prompts), under
    the model as it is (no edits): one batched forward (`steering.evaluate.continuation_token_nll`)."""
    total, count = continuation_token_nll(model, prompts, continuations)
    if int(count.sum()) == 0:
        raise InterpError("perplexity of empty continuations")
    return math.exp(float(total.sum()) / int(count.sum()))


@dataclass
class Row:
    name: str
    strength: float | None
    share: float
    ppl: float
    distinct2: float
    sample: str


@dataclass
class LanguageSteeringTable:
    target: str
    unsteered: Row  # English continuations of the English prompts
    matched: Row  # the model's own continuations of the translated prompts, scored after the English ones
    rows: list[Row] = field(default_factory=list)

    def matched_ratio(self, row: Row) -> float:
        return row.ppl / self.matched.ppl

    def text(self) -> str:
        head = (f"{'variant':28s} {'strength':>8s} {self.target + ' share':>9s} {'ppl':>8s} "
                f"{'/matched':>8s} {'/unsteered':>10s} {'distinct2':>9s}  sample")
        lines = [head]
        for r in [self.unsteered, self.matched, *self.rows]:
            s = "" if r.strength is None else f"{r.strength:g}"
            lines.append(f"{r.name:28s} {s:>8s} {r.share:9.2f} {r.ppl:8.2f} {r.ppl / self.matched.ppl:8.2f} "
                         f"{r.ppl / self.unsteered.ppl:10.2f} {r.distinct2:9.2f}  {r.sample[:50]!r}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"target": self.target, "unsteered": vars(self.unsteered), "matched": vars(self.matched),
                "rows": [vars(r) for r in self.rows]}


def _row(model, name, strength, prompts, score_prompts, edits, target, candidates, generation) -> Row:
    out = interp.generate(model, list(prompts), edits, **generation)  # every prompt in one batch
    share = float(language_hits(out, target, candidates).mean())
    return Row(name, strength, share, continuation_perplexity(model, score_prompts, out), distinct2(out), out[0])


def evaluate(model: interp.Model, variants: Sequence[tuple[str, float | None, Sequence]], target: str,
             english_prompts: Sequence[str], target_prompts: Sequence[str], *,
             candidates: Sequence[str] = ("en", "es", "fr", "de"), generation: dict | None = None,
             ) -> LanguageSteeringTable:
    """The table for `variants` [(name, strength, edits)] on parallel prompt lists."""
    if len(english_prompts) != len(target_prompts) or not english_prompts:
        raise InterpError("need the same number (> 0) of English and target-language prompts")
    candidates = sorted({*candidates, target, "en"})
    gen = {**GENERATION, **(generation or {})}
    base = _row(model, "unsteered", None, english_prompts, english_prompts, (), target, candidates, gen)
    matched = _row(model, f"{target} prompts (matched ref.)", None, target_prompts, english_prompts, (), target,
                   candidates, gen)
    table = LanguageSteeringTable(target, base, matched)
    for name, strength, edits in variants:
        table.rows.append(_row(model, name, strength, english_prompts, english_prompts, edits, target, candidates,
                               gen))
    return table
