"""Model loading: first load (GGUF dequantized, cached as safetensors) vs cached loads.

    .venv/bin/python benchmarks/load.py [--no-write]

The first load runs in a fresh temporary INTERP_CACHE, so the user's cache is
untouched; cached loads are the median of five. Writes the "Model loading
(issue 2)" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.goals import Goals  # noqa: E402
from benchmarks.results import publish  # noqa: E402

SECTION = "## Model loading (issue 2)"
GOAL_CACHED_S = 2.0  # a cached load under 2 s
# Library imports (transformers builds its lazy module tree on first use: ~5 s here) are
# timed apart from the load itself.
_TIMED = """
import time
t = time.perf_counter()
import interp, transformers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401
t1 = time.perf_counter()
interp.load_model("smollm2-135m")
print(t1 - t, time.perf_counter() - t1)
"""


def timed_load(cache: str) -> tuple[float, float]:
    """(seconds importing the libraries, seconds loading the model) in a fresh process."""
    env = {**os.environ, "INTERP_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _TIMED], env=env, capture_output=True, text=True, check=True)
    imports, load = map(float, out.stdout.strip().splitlines()[-1].split())
    return imports, load


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="first vs cached model load")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        imports, first = timed_load(cache)
        runs = [timed_load(cache) for _ in range(5)]
    med = statistics.median(r[1] for r in runs)
    imports = statistics.median([imports] + [r[0] for r in runs])
    text = "\n".join([
        SECTION, "",
        f"Measured {dt.date.today()} by `benchmarks/load.py`: `interp.load_model('smollm2-135m')` in a fresh "
        f"process, 2 cores, after importing the libraries (interp, transformers and its Llama classes: "
        f"median {imports:.1f} s, paid once per process by any tool that uses transformers).", "",
        "| load | seconds | ratio vs first load |", "| --- | ---: | ---: |",
        f"| first (GGUF dequantized, written to the safetensors cache) | {first:.2f} | 1.00 |",
        f"| cached (safetensors), median of 5 | {med:.2f} | {first / med:.0f}× faster |", "",
        f"Goal: a cached load under {GOAL_CACHED_S:g} s — {'pass' if med < GOAL_CACHED_S else 'FAIL'}.",
    ])
    publish(SECTION, text, write=not args.no_write)
    goals = Goals("load")
    goals.below("cached load of smollm2-135m, median of 5 (s)", med, GOAL_CACHED_S)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
