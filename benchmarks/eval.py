"""The steering harness against the per-writer evaluation it replaces (issue 31): the same sweep, timed both ways.

On smollm2-135m (fp32, the machine's threads): an ActAdd direction towards Spanish (16 Bible verses es − en, mean over
tokens, at each layer's residual), 5 layers × 5 strengths, 16 neutral English prompts × 32 new tokens (greedy,
repetition penalty 1.3), scored on the Spanish share (Lingua), perplexity of the continuation under the unsteered
model, distinct-2 and the KL on 8 neutral prompts:

  harness   `steering.evaluate.sweep`: per setting one batched generate of the 16 prompts, one padded forward for
            the 16 perplexities, one batched forward for the neutral KL (the unsteered one is computed once);
  old       the per-writer code it replaces: each prompt generated on its own, each continuation's perplexity in
            its own forward (`steering.language_eval.continuation_perplexity` on one prompt at a time, as
            `language_eval` scored before it used the harness's batched `continuation_token_nll`), the
            neutral KL one prompt at a time (unsteered and steered forward each).

The two paths alternate setting by setting, so the machine's load falls on both alike. Goal: old / harness ≥ 3×.
Reported too: where each path spends its time, and how far the two agree (identical continuations; the largest
difference of a setting's mean score). Appends (rewrites) the section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/eval.py              # the full run (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/eval.py --prompts 4 --new-tokens 8 --no-write   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

TITLE = "## Evaluation harness: batched sweep vs per-writer evaluation (issue 31)"
LAYERS = [6, 10, 14, 18, 22]
STRENGTHS = [0.0, 0.5, 1.0, 1.5, 2.0]
CANDIDATES = ["de", "en", "es", "fr"]
GOAL = 3.0


@dataclass
class Clock:
    """Seconds per stage (generation, perplexity, other scorers) of one path."""

    parts: dict[str, float] = field(default_factory=dict)

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds

    @property
    def total(self) -> float:
        return sum(self.parts.values())


@torch.inference_mode()
def old_setting(model, prompts: list[str], edits: list, neutral: list[str], gen: dict, clock: Clock
                ) -> dict[str, list]:
    """The per-writer path for one setting: per-prompt generation and per-text scoring (values per prompt)."""
    import interp
    from interp.batching import encode_left
    from interp.language_id import language_share
    from steering.language_eval import continuation_perplexity, distinct2

    t = time.perf_counter()
    texts = [interp.generate(model, [p], edits, **gen)[0] for p in prompts]
    clock.add("generate", time.perf_counter() - t)
    t = time.perf_counter()
    ppl = [continuation_perplexity(model, [p], [c]) if model.tokenizer(c, add_special_tokens=False)["input_ids"]
           else math.nan for p, c in zip(prompts, texts)]
    clock.add("perplexity", time.perf_counter() - t)
    t = time.perf_counter()
    share = [language_share([c], "es", CANDIDATES) for c in texts]
    d2 = [distinct2([c]) for c in texts]
    kl = []
    for p in neutral:
        enc = encode_left(model.tokenizer, [p])
        base = model.hf(**enc, use_cache=False).logits[0, -1].float().log_softmax(-1)
        with interp.edit(model, edits, prompt_len=enc["input_ids"].shape[1]):
            steered = model.hf(**enc, use_cache=False).logits[0, -1].float().log_softmax(-1)
        kl.append(float((base.exp() * (base - steered)).sum()))
    clock.add("share, distinct-2, KL", time.perf_counter() - t)
    return {"texts": texts, "share": share, "ppl": ppl, "distinct-2": d2, "KL neutral": kl}


class TimedScorer:
    """A harness scorer whose time goes to one stage of `clock`."""

    def __init__(self, scorer, clock: Clock, part: str):
        self.scorer, self.clock, self.part = scorer, clock, part
        self.name, self.kind = scorer.name, scorer.kind

    def __call__(self, out) -> torch.Tensor:
        t = time.perf_counter()
        try:
            return self.scorer(out)
        finally:
            self.clock.add(self.part, time.perf_counter() - t)


def main() -> int:
    import interp
    from benchmarks.capture import loadavg, machine, versions
    from benchmarks.goals import Goals
    from benchmarks.results import publish
    from interp.corpora import bible_parallel
    from interp.language_id import identify_language
    from steering.actadd import contrast_direction
    from steering.clamps import NEUTRAL_PROMPTS
    from steering.evaluate import Distinct2, LanguageShare, NeutralKL, Perplexity, Sweep, sweep
    from steering.language_eval import GENERATION
    from steering.neutral_prompts import NEUTRAL

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=16, help="prompts per setting (default 16)")
    ap.add_argument("--new-tokens", type=int, default=32, help="new tokens per continuation (default 32)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    gen = {**GENERATION, "max_new_tokens": args.new_tokens}

    model = interp.load_model("smollm2-135m")
    prompts, neutral = NEUTRAL["en"][:args.prompts], list(NEUTRAL_PROMPTS)
    par = bible_parallel(["en", "es"], limit=16)
    es, en = [d.text for d in par["es"]], [d.text for d in par["en"]]
    directions = {layer: contrast_direction(model, es, en, f"blocks.{layer}.hook_resid_post", skip_first=True).vector
                  for layer in LAYERS}

    def family(layer: int, strength: float) -> list:
        return [interp.Add(f"blocks.{layer}.hook_resid_post", directions[layer], scale=strength)]

    identify_language(["warm up"], CANDIDATES)  # Lingua's models load once, outside both paths' clocks
    harness, old = Clock(), Clock()
    scorers = [TimedScorer(LanguageShare("es", CANDIDATES), harness, "share, distinct-2, KL"),
               TimedScorer(Perplexity(), harness, "perplexity"),
               TimedScorer(Distinct2(), harness, "share, distinct-2, KL"),
               TimedScorer(NeutralKL(neutral), harness, "share, distinct-2, KL")]
    settings, olds, loads = [], [], []
    t_start = time.perf_counter()
    for layer in LAYERS:
        for strength in STRENGTHS:
            loads.append(loadavg())
            scored = harness.total - harness.parts.get("generate", 0.0)
            t = time.perf_counter()
            one = sweep(model, family, prompts, [layer], [strength], scorers, generation=gen)
            elapsed = time.perf_counter() - t  # generation (and the sweep's own few steps) plus the scorers:
            harness.add("generate", elapsed - (harness.total - harness.parts.get("generate", 0.0) - scored))
            settings += one.settings
            olds.append(old_setting(model, prompts, family(layer, strength), neutral, gen, old))
            print(f"L{layer} ×{strength:g}: harness {harness.total:6.1f} s, old {old.total:6.1f} s so far "
                  f"(share {one.settings[0].mean('share'):.2f})", flush=True)
    wall = time.perf_counter() - t_start
    result = Sweep(settings, {s.name: s.kind for s in scorers})
    ratio = old.total / harness.total

    same_text = sum(s.sample == o["texts"][0] for s, o in zip(settings, olds))  # first prompt's text per setting
    diffs = {}
    for name in ("share", "ppl", "distinct-2", "KL neutral"):
        d = [abs(s.mean(name) - _nanmean(o[name])) / (_nanmean(o[name]) if name == "ppl" else 1.0)
             for s, o in zip(settings, olds)]  # perplexity: relative
        diffs[name] = max(x for x in d if not math.isnan(x))

    goals = Goals("eval")
    goals.at_least("old per-writer evaluation / batched harness (time)", ratio, GOAL)
    parts = ["generate", "perplexity", "share, distinct-2, KL"]
    threads = torch.get_num_threads()
    ppl_ratio = old.parts["perplexity"] / max(harness.parts["perplexity"], 1e-9)
    lines = [
        TITLE, "",
        f"Measured {dt.date.today()} by `benchmarks/eval.py` on {machine()} ({threads} thread"
        f"{'s' if threads != 1 else ''}; "
        f"{versions()}), load average {min(loads):.1f}–{max(loads):.1f} during the run (another job shared the "
        f"machine when above ~2): smollm2-135m fp32, ActAdd towards Spanish (16 Bible verses es − en, token mean "
        f"without the first, at `blocks.L.hook_resid_post`), layers {LAYERS} × strengths {STRENGTHS}, "
        f"{len(prompts)} neutral English prompts × {args.new_tokens} new tokens (greedy, repetition penalty 1.3), "
        f"neutral KL on {len(neutral)} prompts. The two paths alternate setting by setting ({wall:.0f} s in all).",
        "",
        "| path | " + " | ".join(parts) + " | total | per setting |",
        "|---|" + "---|" * (len(parts) + 2),
    ]
    for name, clock in (("harness (`steering.evaluate.sweep`)", harness), ("old per-writer path", old)):
        lines.append(f"| {name} | " + " | ".join(f"{clock.parts.get(p, 0.0):.1f} s" for p in parts)
                     + f" | {clock.total:.1f} s | {clock.total / len(settings):.2f} s |")
    lines += [
        "",
        f"**old / harness: {ratio:.2f}×** (goal ≥ {GOAL:g}×: {'pass' if ratio >= GOAL else 'FAIL'}). "
        f"Generation alone: {old.parts['generate'] / harness.parts['generate']:.2f}×; perplexity alone: "
        f"{ppl_ratio:.2f}×."
        + (f" One padded forward over {len(prompts)} prompt + continuation rows costs about what {len(prompts)} "
           f"single forwards do when the CPU is the limit: the gain is generation's (one decoding step serves "
           f"{len(prompts)} prompts)."
           if ppl_ratio < 1.5 else ""),
        "",
        f"Agreement: the first prompt's continuation is the same text in {same_text} of {len(settings)} settings "
        + ("(batched generation left-pads, which moves fp32 logits by rounding, and greedy decoding can then part); "
           if same_text < len(settings) else "(left-padding in the batch changes no greedy choice); ")
        + f"largest difference of a setting's mean: share {diffs['share']:.3f}, perplexity {diffs['ppl']:.1e} (relative), "
        f"distinct-2 {diffs['distinct-2']:.3f}, neutral KL {diffs['KL neutral']:.2e}.",
        "",
        "The harness's table (means over prompts):",
        "",
        result.markdown(),
    ]
    publish(TITLE, "\n".join(lines) + "\n", write=not args.no_write)
    return goals.finish()


def _nanmean(values) -> float:
    got = [v for v in values if not math.isnan(v)]
    return sum(got) / len(got) if got else math.nan


if __name__ == "__main__":
    sys.exit(main())
