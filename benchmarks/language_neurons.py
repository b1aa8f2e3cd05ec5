"""Language-neuron statistics (issue 5): throughput of per-language counting, and its memory vs corpus size.

On smollm2-135m, fp32, 2 threads, the parallel Bible in en / es / fr / de
(`--verses` per language, equal token budgets), interleaved, median of `--reps`:

  plain   plain HF forward over the same batches (logits included)
  engine  interp.capture at the 30 mlp.hook_pre sites with a reducer that does nothing:
          the capture engine's own cost (one hook per site, early stop after the last site)
  counts  probes.language_counts.language_counts: ActivationFrequency per language
          (counts, tokens, active sums) at the same 30 sites

Goal: counting keeps the engine's throughput (engine time / counts time ≥ 0.9). Memory:
the peak resident memory added by a counting run (after the model is loaded and warm)
for 1× and 4× the verses, each in a fresh process: it must not grow with the corpus.
Rewrites the "Language-neuron statistics (issue 5)" section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/language_neurons.py [--verses 100] [--reps 3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import interp  # noqa: E402
from benchmarks.capture import machine, versions  # noqa: E402
from benchmarks.goals import Goals  # noqa: E402
from benchmarks.results import publish  # noqa: E402
from interp.corpora import Document  # noqa: E402
from probes.language_counts import bible_texts, equal_budget, language_counts  # noqa: E402

SECTION = "## Language-neuron statistics (issue 5)"
LANGS = ["en", "es", "fr", "de"]
GOAL = 0.9
BATCH, MAX_LENGTH = 8, 256

_MEMORY = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import interp
from probes.language_counts import bible_texts, language_counts
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
m = interp.load_model("smollm2-135m")
language_counts(m, bible_texts({langs}, limit=8))  # warm: allocations of one batch, reducer state
base = hwm()
texts = bible_texts({langs}, limit={verses})
counts, _ = language_counts(m, texts)
print(json.dumps({{"base": base, "peak": hwm(), "tokens": int(counts.tokens.sum())}}))
"""


class Nothing(interp.Reducer):
    """A reducer that keeps nothing: what the engine costs by itself."""

    kind = "nothing"

    def _empty(self, width: int) -> dict:
        return {}

    def update(self, site, acts, batch) -> None:
        pass


def memory(verses: int) -> dict:
    code = _MEMORY.format(langs=LANGS, verses=verses)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verses", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = interp.load_model("smollm2-135m")
    texts, budget = equal_budget(model, bible_texts(LANGS, limit=args.verses), max_length=MAX_LENGTH)
    docs = [Document(t, group=l) for l in LANGS for t in texts[l]]
    sites = model.adapter.expand("mlp.hook_pre")

    def engine():
        with interp.capture(model, sites, [Nothing()], groups=LANGS) as run:
            run.feed(docs, batch_size=BATCH, max_length=MAX_LENGTH, progress=False)

    def counts():
        language_counts(model, texts, batch_size=BATCH, max_length=MAX_LENGTH)

    def forward_only():
        """The same batches through the model with no hook: tokenizing and padding are paid alike."""
        from interp.capture import CaptureRun

        CaptureRun(model, [], [], LANGS, by_group=True).feed(docs, batch_size=BATCH, max_length=MAX_LENGTH,
                                                             progress=False)

    jobs = {"plain": forward_only, "engine": engine, "counts": counts}
    for fn in jobs.values():
        fn()  # warm-up
    times = {k: [] for k in jobs}
    keys = list(jobs)
    for r in range(args.reps):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            jobs[k]()
            times[k].append(time.perf_counter() - t0)
        print(f"rep {r + 1}: " + "  ".join(f"{k} {times[k][-1]:.2f}s" for k in keys), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_tok = budget * len(LANGS)
    ratio = med["engine"] / med["counts"]
    mem = {v: memory(v) for v in (args.verses, 4 * args.verses)}
    grow = {v: (m["peak"] - m["base"]) / 2**20 for v, m in mem.items()}
    flat = grow[4 * args.verses] <= grow[args.verses] * 1.25 + 16  # 4× the corpus: at most 25 % + 16 MiB more
    state_mb = len(LANGS) * len(sites) * model.adapter.d_mlp * (8 + 8) / 2**20
    labels = {"plain": "plain HF forward over the same batches (logits included)",
              "engine": "interp.capture, 30 × mlp.hook_pre, a reducer that keeps nothing (early stop)",
              "counts": "language_counts: ActivationFrequency per language (counts + active sums), 30 × mlp.hook_pre"}
    lines = [
        SECTION, "",
        f"Measured {dt.date.today()} by `benchmarks/language_neurons.py`: smollm2-135m, fp32, 2 threads, the parallel "
        f"Bible in {', '.join(LANGS)} — {args.verses} verses per language cut to an equal budget of {budget} tokens each "
        f"({n_tok} tokens), batches of {BATCH}; median of {args.reps} interleaved repetitions. Machine: {machine()}.",
        "",
        "| job | seconds | tokens/s | ratio vs plain forward |", "| --- | ---: | ---: | ---: |",
    ]
    for k in keys:
        lines.append(f"| {labels[k]} | {med[k]:.2f} | {n_tok / med[k]:,.0f} | {med['plain'] / med[k]:.2f} |")
    lines += [
        "",
        f"Goal: counting keeps the capture engine's throughput (engine / counts time ≥ {GOAL}) — "
        f"**{'pass' if ratio >= GOAL else 'FAIL'}** ({ratio:.3f}).",
        "",
        "Memory (peak resident memory added by a counting run after the model is loaded and warm, fresh process "
        "each): " + "; ".join(f"{v} verses per language ({mem[v]['tokens']:,} tokens): {grow[v]:.0f} MiB"
                              for v in mem)
        + f". The reducer's state is fixed at {state_mb:.1f} MiB (4 languages × 30 layers × 1536 neurons × "
        f"(int64 count + float64 active sum)); what a run adds beyond it is one batch's activations — "
        f"{'it does not grow' if flat else '**it grows**'} with "
        "the corpus.",
        "",
        f"Environment: torch {versions()['torch']}, transformers {versions()['transformers']}.",
    ]
    text = "\n".join(lines)
    publish(SECTION, text, write=not args.no_write)
    goals = Goals("language_neurons")
    goals.at_least("counting throughput: engine / counts time", ratio, GOAL, fmt=".3f")
    goals.at_most("memory a counting run adds at 4× the corpus, MiB (does not grow: ≤ 1× + 25 % + 16)", grow[4 * args.verses],
                  grow[args.verses] * 1.25 + 16, fmt=".0f")
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
