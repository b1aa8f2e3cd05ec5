"""MILAN on neurons with known roles (issue 10's acceptance): does the PMI description agree with the
known role more often than the plain captioner argmax, and than descriptions of random neurons?

The neurons and their references are `probes.milan.known_roles` (language-specific and LM-head
concept neurons of smollm2-135m). Describers: the learned captioner (`--describer trained`, the
default: `probes.milan.captioner`, trained on synthetic annotated neurons; `--generic` sets how
often its synthetic annotators are vague) or the prompted LM (`--describer lm`). Prints the
agreement table (MiniLM cosine, share with cosine ≥ 0.5, BLEU, ROUGE-L) and, for the learned
captioner, writes it to RESULTS.md together with the vagueness sweep.

    .venv/bin/python benchmarks/milan_known_roles.py [--describer trained|lm] [--generic 0 0.15 0.33] [--seeds 0 1 2] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import interp  # noqa: E402
from benchmarks.goals import Goals  # noqa: E402
from benchmarks.results import publish  # noqa: E402
from probes.milan import MilanSettings  # noqa: E402
from probes.milan.annotations import AnnotationSettings  # noqa: E402
from probes.milan.captioner import CaptionerSettings, TrainedDescriber, trained_captioner  # noqa: E402
from probes.milan.describe import LMDescriber  # noqa: E402
from probes.milan.eval import agreement_table  # noqa: E402
from probes.milan.known_roles import (NAMES, NOUNS, agreement_rows, describe_known, known_exemplars,  # noqa: E402
                                      known_neurons, random_partners)

TITLE = "## MILAN on neurons with known roles (issue 10)"
MARGIN = 0.3  # known roles agree at least this much more often than random neurons (PMI)
VAGUE = 0.3  # captioners with at least this share of vague annotations are MILAN's setting: PMI must beat argmax


def check_goals(results: dict[tuple[float, int], dict[str, float]]) -> Goals:
    """results: {(vagueness, seed): agreement by method} for the learned captioner → issue 10's acceptance:
    PMI agrees with the known roles far more often than with random neurons (every captioner and seed), never
    less often than the argmax with the clean captioner, and more often on every seed with a vague one."""
    goals = Goals("milan_known_roles")
    margin = {k: a["PMI (known roles)"] - a["PMI (random neurons)"] for k, a in results.items()}
    worst = min(margin, key=margin.get)
    goals.at_least(f"PMI: known roles − random neurons, every captioner and seed (worst: vague {worst[0]:.2f}, "
                   f"seed {worst[1]})", margin[worst], MARGIN)
    for label, keep, strict in (("clean captioner: PMI ≥ argmax on every seed", lambda g: g == 0, False),
                                (f"vague captioner (≥ {VAGUE:g}): PMI > argmax on every seed", lambda g: g >= VAGUE,
                                 True)):
        gain = [a["PMI (known roles)"] - a["argmax (known roles)"] for (g, _), a in sorted(results.items()) if keep(g)]
        if gain:
            ok = all(d > 0 for d in gain) if strict else all(d >= 0 for d in gain)
            goals.check(label, ", ".join(f"{d:+.2f}" for d in gain), "> 0 each" if strict else "≥ 0 each", ok)
    return goals


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--describer", default="trained", choices=["trained", "lm"])
    p.add_argument("--generic", type=float, nargs="+", default=[0.0, 0.15, 1 / 3],
                   help="the synthetic annotators' vagueness; the first is the default captioner's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="captioner training seeds")
    p.add_argument("--per-language", type=int, default=8, help="language-specific neurons per language")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--lam", type=float, default=0.2)
    p.add_argument("--window", type=int, default=8, help="context tokens each side of the maximum")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    model = interp.load_model("smollm2-135m")
    t0 = time.time()
    neurons = known_neurons(model, per_language=args.per_language)
    langs = sum(n.reference in NAMES.values() for n in neurons)
    neurons += random_partners(model, neurons)
    settings = MilanSettings(beam=args.beam, lam=args.lam, window=args.window)
    exemplars = known_exemplars(model, neurons, settings)
    runs = [(None, 0)] if args.describer == "lm" else [(g, seed) for g in args.generic for seed in args.seeds]
    summary = ["| vague annotations | training seed | PMI, known | argmax, known | PMI, random | argmax, random "
               "| known neurons where PMI ≠ argmax |", "|---|---|---|---|---|---|---|"]
    sections, first, results = [], None, {}
    for generic, seed in runs:
        if generic is None:
            describer, label = LMDescriber(model), "prompted LM (smollm2-135m, few-shot)"
        else:
            cap = trained_captioner(model.tokenizer, AnnotationSettings(window=args.window, generic=generic),
                                    CaptionerSettings(seed=seed), progress=True)
            describer, label = TrainedDescriber(cap), f"learned captioner, vague annotations {generic:.2f}, seed {seed}"
        described = describe_known(describer, neurons, exemplars, settings)
        rows, table = agreement_table(agreement_rows(described))
        agree = {r.name: r.agree for r in rows}
        if generic is not None:
            results[(generic, seed)] = agree
        differ = sum(n.pmi != n.argmax for n in described if n.kind == "known roles")
        summary.append(f"| {'' if generic is None else f'{generic:.2f}'} | {seed} | " + " | ".join(
            f"{agree[f'{m} ({k})']:.2f}" for k in ("known roles", "random neurons") for m in ("PMI", "argmax")) +
            f" | {differ} |")
        print(f"\n{label}\n{table}", flush=True)
        sections.append(f"{label}:\n\n```\n{table}\n```")
        if first is None:
            first = described
    lines = [f"{n.kind:14s} L{n.layer}:{n.unit:<5d} ref {n.reference!r:10s} PMI {n.pmi!r:26s} argmax {n.argmax!r}"
             for n in first]
    text = "\n".join([
        TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/milan_known_roles.py` ({time.time() - t0:.0f} s): "
        f"smollm2-135m, {len(neurons) // 2} neurons with known roles ({langs} language-specific: the "
        f"{args.per_language} most selective for each of es, fr, de, or all of a language's when it has fewer; "
        f"{len(NOUNS)} LM-head concept neurons: {', '.join(NOUNS)}) and one random neuron "
        f"of the same layer for each; exemplars from held-out Bible verses and the demo corpus (window "
        f"{args.window}); λ = {args.lam}, beam {args.beam}. Agreement with the reference: the share of "
        "descriptions with MiniLM cosine ≥ 0.5 (below, per captioner: the mean cosine, BLEU, ROUGE-L too).",
        "", *summary, "", *sections, "",
        "Per neuron (the first describer):", "", "```", *lines, "```",
    ])
    print("\n".join(summary))
    publish(TITLE, text, write=not args.no_write and args.describer == "trained")
    if args.describer == "lm":
        print("no goals for the prompted LM (issue 10's acceptance is on the learned captioner)")
        return 0
    return check_goals(results).finish()


if __name__ == "__main__":
    sys.exit(main())
