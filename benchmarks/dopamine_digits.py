"""The Dopamine paper's digits experiment (issue 11): frozen base vs gates vs LoRA on the rotated mode, 5 seeds.

    .venv/bin/python benchmarks/dopamine_digits.py [--seeds 10] [--hidden 32] [--no-write]

Accuracy on held-out digits rotated by 45°, trainable parameters, and the share of strongly
active hidden units (above the base's mean positive activation); written to RESULTS.md.

Goals (issue 26's decision on issue 11, judged pooled over the seeds, not seed by seed): the hard
gates fix more held-out rotated digits than they break (exact McNemar over all seeds, p < 0.05)
and their mean gain over the frozen base is positive; hardened gates within 2 points of the smooth
ones on every seed; at most a few hundred gate parameters per layer.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.goals import Goals  # noqa: E402
from benchmarks.results import publish  # noqa: E402
from steering.dopamine import GateSettings  # noqa: E402
from steering.dopamine_digits import run  # noqa: E402

TITLE = "## Dopamine digits (issue 11)"
ALPHA = 0.05  # pooled McNemar
HARD_VS_SMOOTH = 0.02  # hardened gates within 2 points of the smooth ones
PARAMS_PER_LAYER = 500  # "at most a few hundred trainable parameters per layer" (256 at the default width)


def mcnemar(fixed: int, broken: int) -> float:
    """Exact two-sided McNemar p-value: the discordant images as a fair coin's flips (scipy)."""
    from scipy.stats import binomtest

    return binomtest(fixed, fixed + broken, 0.5).pvalue if fixed + broken else 1.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--gate-site", choices=["post", "pre"], default="post",
                   help="gates after (post) or before (pre) the hidden ReLUs; the paper does not say")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    results = [run(s, hidden=args.hidden, gate_site=args.gate_site) for s in range(args.seeds)]
    keys = ["frozen (rotated)", "gates smooth", "gates hard", "LoRA", "frozen (upright)"]
    rows = ["| seed | " + " | ".join(keys) + " | gates − frozen | fixed / broken | McNemar p |",
            "|---" * (len(keys) + 4) + "|"]
    for r in results:
        a = r.accuracy
        rows.append(f"| {r.seed} | " + " | ".join(f"{100 * a[k]:.1f}" for k in keys) +
                    f" | {100 * (a['gates hard'] - a['frozen (rotated)']):+.1f} | {r.fixed} / {r.broken} | "
                    f"{mcnemar(r.fixed, r.broken):.2f} |")
    mean = {k: statistics.mean(r.accuracy[k] for r in results) for k in keys}
    fixed, broken = sum(r.fixed for r in results), sum(r.broken for r in results)
    rows.append("| mean | " + " | ".join(f"{100 * mean[k]:.1f}" for k in keys) +
                f" | {100 * (mean['gates hard'] - mean['frozen (rotated)']):+.1f} | {fixed} / {broken} (all) | "
                f"{mcnemar(fixed, broken):.2g} |")
    wins = sum(r.accuracy["gates hard"] > r.accuracy["frozen (rotated)"] for r in results)
    strong = {k: statistics.mean(r.strongly_active[k] for r in results) for k in results[0].strongly_active}
    par = results[0].parameters
    g = GateSettings()
    text = "\n".join([
        TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/dopamine_digits.py`: an MLP 64 → {args.hidden} → "
        f"{args.hidden} → 10 pretrained on half of the training digits, each upright and rotated by 45°, then frozen "
        "and specialised to the rotated mode on the other half (new to the base; 300 steps, the best of every 25 on "
        "a 20 % validation split by accuracy, ties to the lower loss, the same for gates and LoRA): Dopamine gates "
        f"{'after' if args.gate_site == 'post' else 'before'} both hidden ReLUs (τ, g per "
        f"unit; τ from {g.init_threshold:g}, T annealed {g.temperature:g} → {g.final_temperature:g}), LoRA rank 4 on "
        "every linear layer (peft). Accuracy (%) on held-out rotated digits (30 % of the digits, never trained on):",
        "", *rows, "",
        f"Trainable parameters: gates {par['gates']} ({par['gates'] // 2} per layer), LoRA {par['LoRA']}. "
        f"Hard gates beat the frozen base on {wins} of {len(results)} seeds "
        f"(tied on {sum(r.accuracy['gates hard'] == r.accuracy['frozen (rotated)'] for r in results)}). "
        f"Units active in the base that the hard gates close: {', '.join(str(r.turned_off) for r in results)} "
        f"(of {2 * args.hidden}, per seed).",
        "Share of strongly active hidden units (mean over seeds): " +
        ", ".join(f"{k} {100 * v:.1f} %" for k, v in strong.items()) + ".",
        "",
        "fixed / broken: held-out rotated digits the hard gates get right and the frozen base wrong, and the other "
        f"way round (of {results[0].test_images}: one image is {100 / results[0].test_images:.2f} points); McNemar p: "
        "the exact test that they are a fair coin's flips, per seed and over all seeds.",
    ])
    publish(TITLE, text, write=not args.no_write)
    goals = Goals("dopamine_digits")
    goals.check(f"hard gates fix more rotated digits than they break, {len(results)} seeds pooled",
                f"{fixed} / {broken}", "fixed > broken", fixed > broken)
    goals.below("pooled exact McNemar p (fixed vs broken)", mcnemar(fixed, broken), ALPHA, fmt=".3g")
    goals.above("mean gain of the hard gates over the frozen base (points)",
                100 * (mean["gates hard"] - mean["frozen (rotated)"]), 0.0)
    gap = max(abs(r.accuracy["gates hard"] - r.accuracy["gates smooth"]) for r in results)
    goals.at_most("hardened vs smooth gates, worst seed (points)", 100 * gap, 100 * HARD_VS_SMOOTH, fmt=".1f")
    goals.at_most("gate parameters per layer", par["gates"] // 2, PARAMS_PER_LAYER, fmt="d")
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
