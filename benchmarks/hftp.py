"""HFTP on smollm2-135m at full size (issue 7's acceptance): syntax-rate neurons against shuffled controls.

    .venv/bin/python benchmarks/hftp.py [--no-write]

English [Adj N][V N] sentences, 20 streams of 60 sentences in 10 groups, every layer's
`mlp.hook_post`; sentences against their word-shuffled control (z against a third, independent
control), and a second shuffled control in the sentences' place; then the paper's stage 2 (the
differences z-scored against themselves) for both.

Goals: sentences mark at least 10 × as many neurons as the shuffled control does (and at least
500); the paper's self z-score keeps under a tenth of what the independent-control z keeps (it
marks a fixed tail, effect or not). The test suite runs a smaller version (`tests/test_hftp.py`).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TITLE = "## HFTP syntax neurons on smollm2-135m (issue 7)"


def syntax_counts(model, *, n_sentences: int, n_streams: int, n_groups: int) -> dict[str, object]:
    """{name: HftpResult} for sentences and for a shuffled control in their place, with the independent
    control's z ("real", "fake") and with the paper's self z ("paper real", "paper fake")."""
    from probes.hftp.probe import hftp_test, word_series
    from probes.hftp.stimuli import control, experiment

    sites = model.adapter.expand("mlp.hook_post")
    rates = {"sentence": 1.0, "phrase": 2.0}
    kw = dict(n_sentences=n_sentences, n_streams=n_streams)
    series = lambda cond: word_series(model, cond, sites, n_groups=n_groups)  # noqa: E731
    exp, ctl = series(experiment("en", **kw)), series(control("en", **kw))
    ctl2, ctl3 = series(control("en", **kw, shuffle_seed=99)), series(control("en", **kw, shuffle_seed=7))
    return {"real": hftp_test(exp, ctl, rates, null=ctl3), "fake": hftp_test(ctl2, ctl, rates, null=ctl3),
            "paper real": hftp_test(exp, ctl, rates), "paper fake": hftp_test(ctl2, ctl, rates)}


def total(result) -> int:
    """Neurons marked at any rate, over all layers."""
    return sum(sum(c.values()) for c in result.counts().values())


def main() -> int:
    import interp
    from benchmarks.goals import Goals
    from benchmarks.results import publish

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    model = interp.load_model("smollm2-135m")
    t = time.perf_counter()
    r = syntax_counts(model, n_sentences=60, n_streams=20, n_groups=10)
    seconds = time.perf_counter() - t
    n = {k: total(v) for k, v in r.items()}
    text = "\n".join([
        TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/hftp.py` ({seconds:.0f} s): smollm2-135m, English, 20 streams "
        f"of 60 sentences in 10 groups, every layer's `mlp.hook_post` ({model.adapter.n_layers} × "
        f"{model.adapter.d_mlp} neurons).", "",
        f"- sentences against their word-shuffled control: **{n['real']:,}** syntax-rate neurons "
        f"(z against an independent third control)",
        f"- a second shuffled control in the sentences' place: **{n['fake']:,}**",
        f"- the paper's self z-score: {n['paper real']:,} for sentences, {n['paper fake']:,} for the shuffled control",
        "", "```", r["real"].table(), "```",
    ])
    publish(TITLE, text, write=not args.no_write)
    goals = Goals("hftp")
    goals.at_least("syntax neurons: sentences / max(shuffled control, 50)", n["real"] / max(n["fake"], 50), 10.0,
                   fmt=".1f")
    goals.at_least("syntax neurons marked for sentences", n["real"], 500, fmt=".0f")
    goals.below("paper's self z-score / independent-control z (sentences)", n["paper real"] / max(n["real"], 1), 0.1)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
