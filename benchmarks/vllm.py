"""The vLLM engine benchmark (issue 28): steered generation throughput at 1 / 8 / 32 concurrent requests on
`interp serve --engine vllm` (eager, and `--compile`) vs unsteered vLLM vs the transformers engine, capture
tokens/s, and the test session's parity checks on a compiled engine (too slow to start for the test suite).

smollm2-135m, fp32, 2 threads. Each server runs in its own process on localhost (`interp serve`, from
`.venv` for transformers and `.venv-vllm` for vLLM); clients are asyncio tasks of the official openai client
here. Each client sends REQUESTS completions in a row (a short prompt, NEW_TOKENS greedy tokens,
`ignore_eos`). Steered: client i uses recipe i mod 16 (an Add on a residual site and a Clamp of 8 neurons
on an MLP site; `benchmarks/serve.py`'s recipes). Scenarios run interleaved, REPS times; medians of
aggregate new tokens/s are reported. A check first: each recipe's text over the vLLM server equals
`interp.generate` alone. Capture: `interp analyze --probe stats` on 128 Bible verses at every layer's MLP
neurons, on each engine (the vLLM side times `serve.vllm_capture.capture_statistics` after its engine is up).

Goals: per-request steering costs ≤ 10 % of unsteered vLLM's throughput at 32 requests; vLLM steered
≥ 2× the transformers engine steered at 32 requests. Rewrites the "vLLM engine (issue 28)" section.

    .venv/bin/python benchmarks/vllm.py [--quick] [--no-write]      (needs make install-vllm)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
from benchmarks.serve import PROMPTS, REQUESTS, NEW_TOKENS, recipes, run_scenario, server_process  # noqa: E402

MODEL = "smollm2-135m"
SECTION = "## vLLM engine (issue 28)"
CLIENTS = (1, 8, 32)
GOAL_STEER_COST = 1.10  # unsteered vLLM / steered vLLM tokens/s at 32 requests
GOAL_VS_TRANSFORMERS = 2.0  # steered vLLM / steered transformers engine tokens/s at 32 requests
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
CAPTURE_CORPUS, CAPTURE_LENGTH = "bible:en,fr:64", 128


CAPTURE_SCRIPT = """
import asyncio, json, os, time
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
from interp.corpora import load_corpus
from interp.models import load_skeleton, model_folder
from serve.vllm_capture import capture_statistics
from serve.vllm_engine import VllmEngine, VllmOptions

async def main():
    model = load_skeleton({model!r})
    corpus = load_corpus({corpus!r})
    sites = model.adapter.expand("mlp.hook_post", None)
    engine = VllmEngine(str(model_folder({model!r})[0]), VllmOptions(dtype="float32", max_model_len={length} + 1,
                        enable_prefix_caching=False))
    try:
        t0 = time.perf_counter()
        stats = await capture_statistics(engine, model.tokenizer, corpus, sites, top_k=16, max_length={length})
        print(json.dumps({{"seconds": time.perf_counter() - t0, "tokens": stats.params["n_tokens"]}}))
    finally:
        engine.close()

if __name__ == "__main__":  # vLLM spawns processes that import this module
    asyncio.run(main())
"""


def capture_rates() -> dict[str, tuple[float, int]]:
    """(tokens/s, tokens) of the stats capture on each engine."""
    from interp.corpora import load_corpus
    from probes.stats import activation_statistics

    model = interp.load_model(MODEL)
    corpus = load_corpus(CAPTURE_CORPUS)
    sites = model.adapter.expand("mlp.hook_post", None)
    t0 = time.perf_counter()
    stats = activation_statistics(model, corpus, sites, top_k=16, batch_size=8, max_length=CAPTURE_LENGTH,
                                  progress=False)
    out = {"transformers": (stats.params["n_tokens"] / (time.perf_counter() - t0), stats.params["n_tokens"])}
    del model
    script = CAPTURE_SCRIPT.format(model=MODEL, corpus=CAPTURE_CORPUS, length=CAPTURE_LENGTH)
    proc = subprocess.run([str(VLLM_PY), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("the vLLM capture failed: " + proc.stderr[-2000:])
    got = json.loads(lines[-1])
    out["vllm"] = (got["tokens"] / got["seconds"], got["tokens"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="the vLLM engine: steered throughput at 1/8/32 requests, capture tokens/s")
    ap.add_argument("--quick", action="store_true", help="2 repetitions instead of 3")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if not VLLM_PY.exists():
        print("benchmarks/vllm.py needs .venv-vllm: make install-vllm", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    import openai

    from interp.recipes import save_recipe

    reference = interp.load_model(MODEL)
    goals = Goals("vllm")
    reps = 2 if args.quick else 3
    rates: dict[tuple[str, int, bool], list[float]] = {}
    starts: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        edits = recipes(reference)
        files = {name: save_recipe(Path(tmp) / f"{name}.safetensors", e, reference) for name, e in edits.items()}
        servers = (("vllm", VLLM_PY, ()), ("vllm-compiled", VLLM_PY, ("--compile",)),
                   ("transformers", Path(sys.executable), ()))
        for label, python, flags in servers:
            engine = label.split("-")[0]
            extra = ("--max-model-len", "512", *flags) + (("--dtype", "float32", "--max-num-seqs", "32")
                                                          if engine == "vllm" else ())
            t0 = time.perf_counter()
            with server_process(files, Path(tmp), python=python, engine=engine, extra=extra) as url:
                starts[label] = time.perf_counter() - t0
                if engine == "vllm":
                    c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
                    same = 0
                    for name in ("r0", "r5", "r10", "r15"):
                        got = c.completions.create(model=f"{MODEL}:{name}", prompt=PROMPTS[0], max_tokens=12,
                                                   temperature=0).choices[0].text
                        same += got == interp.generate(reference, PROMPTS[0], edits[name], max_new_tokens=12)[0]
                    goals.check(f"recipes over {label} equal interp.generate alone", f"{same}/4", "4/4", same == 4)
                run_scenario(url, 16, True)  # warm up: every recipe once
                kinds = (False, True) if engine == "vllm" else (True,)
                for rep in range(reps):
                    for n in CLIENTS:
                        for steered in (kinds if rep % 2 == 0 else kinds[::-1]):
                            rate, _ = run_scenario(url, n, steered)
                            rates.setdefault((label, n, steered), []).append(rate)
                            print(f"rep {rep}: {label}, {n:2d} requests, {'steered' if steered else 'unsteered'}: "
                                  f"{rate:.1f} tok/s", flush=True)
    del reference
    capture = capture_rates()
    compiled = compiled_session()
    med = {k: statistics.median(v) for k, v in rates.items()}
    cost = {m: med[m, 32, False] / med[m, 32, True] for m in ("vllm", "vllm-compiled")}
    best = max(("vllm", "vllm-compiled"), key=lambda m: med[m, 32, True])
    speedup = med[best, 32, True] / med["transformers", 32, True]
    rows = [f"| {n} | {med['vllm', n, False]:.1f} | {med['vllm', n, True]:.1f} | {med['vllm-compiled', n, False]:.1f} | "
            f"{med['vllm-compiled', n, True]:.1f} | {med['transformers', n, True]:.1f} | "
            f"{med['vllm', n, False] / med['vllm', n, True]:.3f} | "
            f"{med['vllm-compiled', n, False] / med['vllm-compiled', n, True]:.3f} | "
            f"{max(med['vllm', n, True], med['vllm-compiled', n, True]) / med['transformers', n, True]:.2f} |"
            for n in CLIENTS]
    parity = compiled["parity"]
    text = "\n".join([
        SECTION, "",
        f"Measured {dt.date.today()} by `benchmarks/vllm.py` on {machine()} ({versions()}; vllm-cpu 0.32.0 in "
        f".venv-vllm): `interp serve --engine vllm` eager and with `--compile` (torch.compile by inductor, the "
        f"recipes' sites tapped before compiling), and `interp serve` (transformers continuous batching), "
        f"{MODEL}, fp32, 2 threads, each in its own process on localhost; each client sends {REQUESTS} completions "
        f"in a row ({NEW_TOKENS} greedy tokens, ignore_eos) with the official openai client. Aggregate new "
        f"tokens/s, median of {reps} interleaved repetitions. Steered: client i uses recipe i mod 16 (an Add on a "
        f"residual site and a Clamp of 8 neurons on an MLP site). Start-up to a healthy server: eager vLLM "
        f"{starts['vllm']:.0f} s, compiled {starts['vllm-compiled']:.0f} s, transformers {starts['transformers']:.0f} s. "
        f"No GPU was lent, so nothing here ran on CUDA (vLLM with CUDA graphs split at the taps is untested).", "",
        "| requests | eager unsteered | eager steered | compiled unsteered | compiled steered | transformers steered | "
        "eager unsteered / steered | compiled unsteered / steered | best vLLM / transformers, steered |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *rows, "",
        f"Capture (`--probe stats`, {CAPTURE_CORPUS} ≤ {CAPTURE_LENGTH} tokens each, the MLP neurons of every layer, "
        f"top-16 exemplars): transformers engine {capture['transformers'][0]:.0f} tokens/s, vLLM "
        f"{capture['vllm'][0]:.0f} tokens/s ({capture['vllm'][1]} tokens; the vLLM time excludes its start-up).", "",
        f"Compiled engine, the test session's checks (`tests/vllm/session.py --compiled`): greedy tokens of recipes "
        f"a, b, c and none equal `interp.generate` for {parity['equal']}/{parity['jobs']} requests; capture top-1 "
        f"exemplars equal on {min(c['top1_equal'] for c in compiled['capture'].values()):.1%} of neurons; an edit at "
        f"an untapped site refused with HTTP {compiled['refused'][0]}.", "",
        f"Goals: per-request steering costs ≤ {(GOAL_STEER_COST - 1) * 100:.0f} % of unsteered vLLM at 32 requests "
        f"(eager {(cost['vllm'] - 1) * 100:+.1f} %, compiled {(cost['vllm-compiled'] - 1) * 100:+.1f} %, "
        f"{'pass' if max(cost.values()) <= GOAL_STEER_COST else 'FAIL'}); vLLM steered ≥ "
        f"{GOAL_VS_TRANSFORMERS:g}× the transformers engine at 32 requests ({best}: {speedup:.2f}×, "
        f"{'pass' if speedup >= GOAL_VS_TRANSFORMERS else 'FAIL'}).",
    ])
    publish(SECTION, text, write=not args.no_write)
    for m in cost:
        goals.at_most(f"unsteered / steered {m} tokens/s at 32 requests", cost[m], GOAL_STEER_COST, fmt=".3f")
    goals.at_least("steered vLLM / steered transformers engine tokens/s at 32 requests", speedup, GOAL_VS_TRANSFORMERS)
    goals.check("compiled vLLM: recipes equal interp.generate", f"{parity['equal']}/{parity['jobs']}", "32/32",
                parity["equal"] == parity["jobs"] == 32)
    goals.check("compiled vLLM: an edit at an untapped site is refused", str(compiled["refused"][0]), "400",
                compiled["refused"][0] == 400)
    return goals.finish()


def compiled_session() -> dict:
    """The vLLM test session's checks on a compiled engine (inductor: minutes to start on 2 cores)."""
    proc = subprocess.run([str(VLLM_PY), str(ROOT / "tests" / "vllm" / "session.py"), "--compiled"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError("the compiled vLLM session failed: " + proc.stderr[-2000:])
    return json.loads(lines[-1])

if __name__ == "__main__":
    sys.exit(main())
