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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

import interp
from interp.errors import InterpError
from interp.language_id import language_share

GENERATION = {"max_new_tokens": 32, "repetition_penalty": 1.3}


@torch.inference_mode()
def continuation_perplexity(model: interp.Model, prompts: Sequence[str], continuations: Sequence[str]) -> float:
    """exp(mean NLL) of the continuation tokens given their prompt, under the model as it is (no edits)."""
    tok = model.tokenizer
    total, count = 0.0, 0
    for p, c in zip(prompts, continuations, strict=True):
        p_ids = tok(p)["input_ids"]
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        if not c_ids:
            continue
        ids = torch.tensor([p_ids + c_ids], device=model.device)
        logits = model.hf(input_ids=ids, use_cache=False).logits[0, len(p_ids) - 1:-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, len(p_ids):], reduction="sum"))
        count += len(c_ids)
    if count == 0:
        raise InterpError("perplexity of empty continuations")
    return math.exp(total / count)


def distinct2(texts: Sequence[str]) -> float:
    """Distinct word bigrams over all word bigrams (1 = no repeated pair)."""
    pairs = [tuple(w[i:i + 2]) for w in (t.split() for t in texts) for i in range(len(w) - 1)]
    return len(set(pairs)) / len(pairs) if pairs else 1.0


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
    out = interp.generate(model, list(prompts), edits, **generation)
    share = language_share(out, target, candidates)
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
