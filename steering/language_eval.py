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

The rows are one sweep of the evaluation harness (`steering.evaluate.sweep`, issue 31) whose "layers"
are the variants: every prompt of a row generated in one batch, the share from `LanguageShare`, the
perplexity from one batched forward (`continuation_token_nll`; pooled over the row's tokens here, where
`Perplexity` averages per prompt) and `distinct2` (over the row's texts together here, per text in
`Distinct2`). What is this module's own: the table, its matched reference and the variant list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

import interp
from interp.errors import InterpError

from .evaluate import Effect, LanguageShare, Outputs, continuation_token_nll, distinct2, sweep

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


def _pooled_nll() -> list[Effect]:
    """Two scorers whose row sums give the token-pooled perplexity: each continuation's summed NLL under the
    unsteered model after its English prompt (one batched forward), and its number of tokens."""
    return [Effect("nll", lambda out: continuation_token_nll(out.model, out.prompts, out.texts)[0]),
            Effect("tokens", lambda out: torch.tensor([len(out.model.tokenizer(t, add_special_tokens=False)
                                                           ["input_ids"]) for t in out.texts], dtype=torch.float64))]


def _row(name: str, strength: float | None, texts: list[str], scores: dict[str, torch.Tensor]) -> Row:
    if float(scores["tokens"].sum()) == 0:
        raise InterpError("perplexity of empty continuations")
    ppl = math.exp(float(scores["nll"].sum()) / float(scores["tokens"].sum()))
    return Row(name, strength, float(scores["share"].mean()), ppl, distinct2(texts), texts[0])


def evaluate(model: interp.Model, variants: Sequence[tuple[str, float | None, Sequence]], target: str,
             english_prompts: Sequence[str], target_prompts: Sequence[str], *,
             candidates: Sequence[str] = ("en", "es", "fr", "de"), generation: dict | None = None,
             ) -> LanguageSteeringTable:
    """The table for `variants` [(name, strength, edits)] on parallel prompt lists: one sweep over the unsteered
    model and the variants, plus the matched reference (the translated prompts' continuations, scored after the
    English prompts)."""
    if len(english_prompts) != len(target_prompts) or not english_prompts:
        raise InterpError("need the same number (> 0) of English and target-language prompts")
    candidates = sorted({*candidates, target, "en"})
    gen = {**GENERATION, **(generation or {})}
    scorers = [LanguageShare(target, candidates), *_pooled_nll()]
    rows = [("unsteered", None, ()), *variants]
    result = sweep(model, lambda i, _strength: rows[i][2], english_prompts, range(len(rows)), [0.0], scorers,
                   generation=gen)
    english = list(english_prompts)
    matched_texts = interp.generate(model, list(target_prompts), (), **gen)  # every prompt in one batch
    matched_out = Outputs(model, english, (), matched_texts)
    matched = _row(f"{target} prompts (matched ref.)", None, matched_texts, {s.name: s(matched_out) for s in scorers})
    base, *steered = [_row(name, strength, st.texts, st.scores) for (name, strength, _), st in zip(rows, result.settings)]
    return LanguageSteeringTable(target, base, matched, steered)
