"""FOXP2 through the evaluation harness (issue 31): does `steering.evaluate.sweep` reproduce RESULTS.md's FOXP2 row?

    .venv/bin/python benchmarks/foxp2_eval.py [--no-write]

Issue 6's protocol up to the table (96 parallel verses, the automatic window, SAEs of 100 steps at 3e-3, α
calibrated on the 16 calibration prompts), then one harness sweep over FOXP2 at 2/3, 1 and 4/3 × α (β fixed at 1)
on the 16 held-out neutral prompts: Spanish share, perplexity as a ratio to the matched reference (the model's
own continuations of the Spanish prompts), distinct-2 and the neutral KL side effect, and the harness's
recommendation within perplexity ≤ 1.5 × matched, KL ≤ 5 nats, distinct-2 ≥ 0.7.

Goal: at the calibrated α the share and the perplexity ratio equal RESULTS.md's "Neural FOXP2 (issue 6)" row for
es (share 0.88, ratio 0.64: within 1/16 in share, 0.05 in ratio), and the recommended setting keeps the bounds.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TITLE = "## Neural FOXP2 through the evaluation harness (issue 31)"
PUBLISHED = {"share": 0.88, "ratio": 0.64, "alpha": 1.25}  # RESULTS.md, Neural FOXP2 (issue 6), es, neuron space
BOUNDS, FLOORS = {"ppl": 1.5, "KL neutral": 5.0}, {"distinct-2": 0.7}


def main() -> int:
    import interp
    from benchmarks.goals import Goals
    from benchmarks.results import publish
    from probes.foxp2 import Foxp2Settings, analyze
    from probes.language_counts import bible_texts
    from steering.evaluate import Distinct2, LanguageShare, NeutralKL, Perplexity, sweep
    from steering.foxp2 import calibrate_strength, foxp2_edits, window_from_analysis
    from steering.language_eval import GENERATION
    from steering.neutral_prompts import CALIBRATION, NEUTRAL

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    model = interp.load_model("smollm2-135m")
    texts = bible_texts(["en", "es"], limit=96)
    analysis = analyze(model, texts, Foxp2Settings(target="es", sae_steps=100, sae_lr=3e-3))
    window = window_from_analysis(analysis)
    cands = ("en", "es", "fr", "de")
    alpha, calibration = calibrate_strength(model, window, "es", CALIBRATION, candidates=cands)
    strengths = [round(alpha * f, 4) for f in (2 / 3, 1, 4 / 3)]
    reference = interp.generate(model, NEUTRAL["es"], (), **GENERATION)
    share = LanguageShare("es", cands)
    result = sweep(model, lambda _layer, a: foxp2_edits(window, alpha=a), NEUTRAL["en"], [0], [0.0, *strengths],
                   [share, Perplexity(), Distinct2(), NeutralKL(CALIBRATION[:8])], reference_texts=reference,
                   generation=GENERATION)
    at = next(s for s in result.settings if s.strength == round(alpha, 4))
    best = result.recommend(share.name, BOUNDS, FLOORS)
    got_share, got_ratio = result.value(at, share.name), result.value(at, "ppl")
    text = "\n".join([
        TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/foxp2_eval.py` on smollm2-135m → es: issue 6's protocol "
        f"(window {analysis.window[0]}–{analysis.window[-1]}, calibrated α = {alpha:g}, sweep {calibration}), then "
        "one `steering.evaluate.sweep` over FOXP2 at 0, 2/3, 1 and 4/3 × α (β = 1) on the 16 held-out neutral prompts "
        "(greedy, 32 tokens, repetition penalty 1.3); perplexity as a ratio to the matched reference; neutral KL on 8 "
        "calibration prompts.", "",
        result.markdown(), "",
        f"At the calibrated α = {alpha:g}: share {got_share:.2f}, perplexity {got_ratio:.2f} × matched — RESULTS.md's "
        f"FOXP2 row (issue 6): share {PUBLISHED['share']:.2f}, {PUBLISHED['ratio']:.2f} × at α {PUBLISHED['alpha']:g}. "
        + (f"Recommended (perplexity ≤ {BOUNDS['ppl']:g} ×, KL ≤ {BOUNDS['KL neutral']:g}, distinct-2 ≥ "
           f"{FLOORS['distinct-2']:g}): α = {best.strength:g}, share {result.value(best, share.name):.2f}."
           if best is not None else "No setting keeps the bounds."),
    ])
    print(text)
    publish(TITLE, text, write=not args.no_write)
    goals = Goals("foxp2_eval")
    goals.check("calibrated α as published", f"{alpha:g}", f"{PUBLISHED['alpha']:g}", alpha == PUBLISHED["alpha"])
    goals.check("share at the calibrated α, as published", f"{got_share:.3f}", f"{PUBLISHED['share']} ± 1/16",
                abs(got_share - PUBLISHED["share"]) <= 1 / 16 + 1e-9)
    goals.check("perplexity ratio at the calibrated α, as published", f"{got_ratio:.3f}",
                f"{PUBLISHED['ratio']} ± 0.05", abs(got_ratio - PUBLISHED["ratio"]) <= 0.05)
    goals.check("a recommended setting within the bounds", "none" if best is None else f"α {best.strength:g}",
                "one", best is not None and best.strength > 0)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
