"""Shared LLM/VLM neurons and SNRF on the VLM testbed: README's tables, each claim a goal.

Builds (or reuses, from ~/.cache/interp/testbed/) the full VLM testbed, runs README's command

    interp analyze --probe shared-neurons --model $TB/vlm --pair $TB/llm --task product \\
        --amplify 1.5,2 --snrf-beta 0.5,1,2 --out DIR

and checks, on the atlas it writes (atlas.json's params):

- overlap: in every module and layer, |shared| / |VLM set| is above that of random sets of the same sizes;
- amplification: at every α, scaling the shared FFN and o units changes more answers than scaling random
  units of the same counts (their mean over 3 draws);
- SNRF β = 0.5 (the paper's): held-out image-product accuracy above the base VLM's.

Writes the "Shared neurons and SNRF (VLM testbed)" section of benchmarks/RESULTS.md (unless
--no-write). The full build takes many minutes on a CPU the first time; `--reduced` uses the reduced
testbed with 30 samples and 120 held-out questions per task (what the tests use; smaller margins).

    .venv/bin/python benchmarks/snrf.py [--reduced] [--out DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.goals import Goals  # noqa: E402

TITLE = "## Shared neurons and SNRF (VLM testbed)"
ALPHAS, BETAS, GOAL_BETA = "1.5,2", "0.5,1,2", 0.5


def check_goals(params: dict, beta: float = GOAL_BETA) -> Goals:
    """The three claims, from a shared-neurons atlas's params ("overlap", "tables")."""
    goals = Goals("snrf")
    margins = [(o - r, m, layer) for m, d in params["overlap"].items()
               for layer, o, r in zip(d["layers"], d["overlap"], d["random"], strict=True)]
    below = [f"{m} L{layer}" for gap, m, layer in margins if not gap > 0]
    worst = min(margins)
    goals.check(f"overlap above random sets in every layer ({len(params['overlap'])} modules)",
                f"below at {', '.join(below)}" if below else f"all {len(margins)}; smallest margin {worst[0]:.2f} "
                f"({worst[1]} L{worst[2]})", "every layer", not below and bool(margins))
    rows = params["tables"].get("amplification", [])
    if not rows:
        goals.check("shared units change more answers than random ones", "not measured", "measured", False)
    for alpha in sorted({r["alpha"] for r in rows}):
        shared = [r["changed"] for r in rows if r["alpha"] == alpha and r["units"] == "shared"]
        rand = [r["changed"] for r in rows if r["alpha"] == alpha and r["units"].startswith("random")]
        goals.check(f"α = {alpha:g}: shared units change more answers than random ones (share changed)",
                    f"{shared[0]:.3f}", f"> {sum(rand) / len(rand):.3f} (random)", shared[0] > sum(rand) / len(rand))
    snrf = params["tables"].get(f"snrf beta={beta:g}")
    if snrf is not None:
        mine = next(v for k, v in snrf.items() if k.startswith("SNRF"))
        goals.above(f"SNRF β = {beta:g}: image-product accuracy over the base VLM's", mine["product"],
                    snrf["base VLM"]["product"], fmt=".3f")
    else:
        goals.check(f"SNRF β = {beta:g}: image-product accuracy over the base VLM's", "not measured", "measured", False)
    return goals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reduced", action="store_true", help="the reduced testbed, 30 samples, 120 questions per task")
    ap.add_argument("--seed", type=int, default=0, help="testbed seed")
    ap.add_argument("--threads", type=int, default=1, help="threads for a testbed build")
    ap.add_argument("--out", type=Path, help="the atlas folder (default: a temporary folder)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    from atlases.neuron_atlas import load_atlas
    from testbeds.vlm import build_testbed

    t0 = time.time()
    paths = build_testbed(reduced=args.reduced, seed=args.seed, threads=args.threads)
    built = time.time() - t0
    samples, held_out = (30, 120) if args.reduced else (100, 200)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "shared"
        cmd = [sys.executable, "-m", "cli.main", "analyze", "--probe", "shared-neurons", "--model", str(paths.vlm),
               "--pair", str(paths.llm), "--task", "product", "--amplify", ALPHAS, "--snrf-beta", BETAS,
               "--samples", str(samples), "--held-out", str(held_out), "--out", str(out)]
        print("$ interp " + " ".join(cmd[3:]), flush=True)
        t1 = time.time()
        subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
        seconds = time.time() - t1
        atlas = load_atlas(out)
        table = (out / "table.txt").read_text(encoding="utf-8")
    goals = check_goals(atlas.params)
    text = "\n".join([
        TITLE, "",
        f"Measured {dt.date.today()} by `benchmarks/snrf.py{' --reduced' if args.reduced else ''}`: the "
        f"{'reduced' if args.reduced else 'full'} VLM testbed (seed {args.seed}; {built:.0f} s to build or find it), "
        f"{samples} image-product samples and their text twins, ratio 0.3, {held_out} held-out questions per task, "
        f"α {ALPHAS}, β {BETAS}, rank 4; the analysis took {seconds:.0f} s.", "",
        "```", table.rstrip("\n"), "```", "",
        "Goals:", "",
        *[f"- {g.name}: {g.measured} (target {g.target}) — {'pass' if g.ok else '**FAIL**'}" for g in goals.goals],
    ])
    from benchmarks.results import publish

    publish(TITLE, text, write=not args.no_write)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
