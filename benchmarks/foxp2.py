"""Neural FOXP2 at full size (issue 6's acceptance): make smollm2-135m answer in Spanish and in French.

    .venv/bin/python benchmarks/foxp2.py [--targets es fr] [--sites neurons resid] [--no-write]
    .venv/bin/python benchmarks/foxp2.py --only-sites              # issue 30's site comparison only (Spanish)
    .venv/bin/python benchmarks/foxp2.py --model gemma3-270m --targets hi     # the Hindi record (foxp2_hindi.py)

Per target: localise on 96 parallel Bible verses (spectra of every layer, the automatic window,
one TopK SAE per window layer, 100 steps at 3e-3), calibrate α on the 16 calibration prompts
(`steering.neutral_prompts.CALIBRATION`), then the evaluation table on the 16 held-out neutral
prompts: FOXP2 at 2/3, 1 and 4/3 × α and, for the first target, the ablations (positive shift only,
negative shift only, a random direction of the same norm, ActAdd at scales 1 and 2).

Goals per target (issue 6): the unsteered model answers in the target at most 10 % of the time;
FOXP2 at the calibrated α does so at least 80 % of the time, with perplexity under 1.5 × the
model's own target-language continuations (the matched reference) and distinct-2 at least 0.7
(no loop); every window layer's SAE explains 0.5–1 of the held-out variance; and, with the
ablations, the negative shift alone switches less than FOXP2 does.

Sites (issue 30): the first target again with `--site resid` (the paper's h_l, the residual stream
`hook_resid_post`, its differences, window and masks over residual dimensions; every other setting
ours), beside the neuron-space default: its share must reach 0.8 too; both perplexity ratios to the
matched reference are reported side by side (a section of their own in RESULTS.md).
The test suite runs a smaller version (`tests/test_foxp2.py`, `tests/test_foxp2_paper.py`).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TITLE = "## Neural FOXP2 (issue 6)"
SITES_TITLE = "## Neural FOXP2: residual stream vs neurons (issue 30)"
SITES = {"neurons": "mlp.hook_post", "resid": "hook_resid_post"}
SHARE, UNSTEERED_SHARE, MATCHED_RATIO, DISTINCT2 = 0.8, 0.1, 1.5, 0.7


@dataclass
class Foxp2Run:
    """One target's localisation, calibration and table."""

    target: str
    site: str
    analysis: object  # probes.foxp2.Foxp2Analysis
    alpha: float
    sweep: list
    table: object  # steering.language_eval.LanguageSteeringTable
    seconds: float

    def row(self):
        return next(x for x in self.table.rows if x.name == "FOXP2" and x.strength == self.alpha)

    def text(self, model_name: str) -> str:
        return (f"{model_name} → {self.target} at `{self.site}`: window {self.analysis.window}, calibrated α = {self.alpha:g} "
                f"(sweep {self.sweep}), {self.seconds:.0f} s\n\n```\n{self.analysis.table()}\n\n"
                f"{self.table.text()}\n```")


def run(model, target: str, *, ablations: bool, verses: int = 96, sae_steps: int = 100, site: str = "mlp.hook_post",
        **settings) -> Foxp2Run:
    """Localise, calibrate and evaluate FOXP2 for one target language (the full-size protocol); `settings`
    go to `Foxp2Settings` (a fixed window, more features traced, ...)."""
    from probes.foxp2 import Foxp2Settings, analyze
    from probes.language_counts import bible_texts
    from steering.foxp2 import calibrate_strength, foxp2_table, window_from_analysis
    from steering.neutral_prompts import CALIBRATION

    t = time.perf_counter()
    texts = bible_texts(["en", target], limit=verses)
    # 100 SAE steps at 3× the default rate: the same explained variance as 300 steps, at a third of the time
    analysis = analyze(model, texts, Foxp2Settings(target=target, sae_steps=sae_steps, sae_lr=3e-3, site=site,
                                                   **settings))
    window = window_from_analysis(analysis)
    cands = ("en", "es", "fr", "de", target)
    alpha, sweep = calibrate_strength(model, window, target, CALIBRATION, candidates=cands)
    table = foxp2_table(model, window, target, texts, alpha=alpha, candidates=cands, ablations=ablations,
                        actadd_scales=(1.0, 2.0))  # ActAdd at 0.5 switches nothing (6 %)
    return Foxp2Run(target, site, analysis, alpha, sweep, table, time.perf_counter() - t)


def check(goals, r: Foxp2Run) -> None:
    """Issue 6's acceptance for one target, as goals."""
    t = r.target
    row = r.row()
    ev = [f.explained_variance for f in r.analysis.layers.values()]
    goals.check(f"{t}: SAE explained variance, every window layer", f"{min(ev):.2f}–{max(ev):.2f}", "in (0.5, 1)",
                all(0.5 < v < 1.0 for v in ev))
    goals.at_most(f"{t}: unsteered share", r.table.unsteered.share, UNSTEERED_SHARE)
    goals.at_least(f"{t}: FOXP2 share at α = {r.alpha:g}", row.share, SHARE)
    goals.below(f"{t}: FOXP2 perplexity / matched reference", r.table.matched_ratio(row), MATCHED_RATIO)
    goals.at_least(f"{t}: FOXP2 distinct-2", row.distinct2, DISTINCT2)
    neg = next((x for x in r.table.rows if x.name == "negative shift only"), None)
    if neg is not None:
        goals.below(f"{t}: negative shift only, share (below FOXP2's)", neg.share, row.share)


def check_site(goals, r: Foxp2Run) -> None:
    """Issue 30's acceptance for a non-default site: the share reaches 0.8 (the perplexity ratio is reported)."""
    goals.at_least(f"{r.target} at {r.site}: FOXP2 share at α = {r.alpha:g}", r.row().share, SHARE)


def sites_text(model_name: str, runs: list[Foxp2Run]) -> str:
    """Issue 30's section: one row per site (same target, same protocol), then each site's run."""
    head = ["| site | window | α | share | perplexity / matched reference | distinct-2 | seconds |",
            "|---|---|---|---|---|---|---|"]
    for r in runs:
        row = r.row()
        head.append(f"| `{r.site}` | {r.analysis.window[0]}–{r.analysis.window[-1]} | {r.alpha:g} | {row.share:.2f} | "
                    f"{r.table.matched_ratio(row):.2f} | {row.distinct2:.2f} | {r.seconds:.0f} |")
    return "\n".join([
        SITES_TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/foxp2.py` on {model_name}, English → {runs[0].target}: the "
        "same protocol as issue 6's (96 verses, the automatic window — best-run rule, chosen from each site's own "
        "spectra —, SAEs of 100 steps, α calibrated on the 16 calibration prompts, 16 held-out neutral prompts), "
        "with the differences, the shift and the masks at each site: `mlp.hook_post` (the default, MLP neurons) and "
        "`hook_resid_post` (`--site resid`, the paper's h_l; N_T / N_EN are residual dimensions traced from the "
        "SAE features). Goal: share ≥ 0.8 at each site.", "",
        *head, "",
        *[r.text(model_name) + "\n" for r in runs],
    ])


def main() -> int:
    import interp
    from benchmarks.goals import Goals
    from benchmarks.results import publish

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--targets", nargs="+", default=["es", "fr"])
    p.add_argument("--sites", nargs="+", default=["neurons", "resid"], choices=list(SITES),
                   help="steering sites compared on the first target (issue 30); the issue-6 runs use neurons")
    p.add_argument("--only-sites", action="store_true",
                   help="only the site comparison on the first target (no ablations; writes only its section)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    model = interp.load_model(args.model)
    goals = Goals("foxp2")
    runs = []
    if not args.only_sites:
        for i, target in enumerate(args.targets):
            runs.append(run(model, target, ablations=i == 0))
            print(runs[-1].text(model.name), flush=True)
            check(goals, runs[-1])
    by_site = []
    if len(args.sites) > 1 or args.only_sites:
        for name in args.sites:
            site = SITES[name]
            done = next((r for r in runs if r.target == args.targets[0] and r.site == site), None)
            if done is None:
                done = run(model, args.targets[0], ablations=False, site=site)
                print(done.text(model.name), flush=True)
                if site == SITES["neurons"]:
                    check(goals, done)
            if site != SITES["neurons"]:
                check_site(goals, done)
            by_site.append(done)
    if runs:
        text = "\n".join([
            TITLE, "",
            f"Measured {datetime.date.today()} by `benchmarks/foxp2.py` on {model.name}: 96 parallel Bible verses per "
            "language, the automatic window, a TopK SAE per window layer (100 steps), α calibrated on 16 calibration "
            "prompts; 16 held-out neutral English prompts, greedy, 32 tokens, repetition penalty 1.3.", "",
            *[r.text(model.name) + "\n" for r in runs],
        ])
        publish(TITLE, text, write=not args.no_write)
    if by_site:
        publish(SITES_TITLE, sites_text(model.name, by_site), write=not args.no_write)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
