"""Serving benchmark (issue 27): aggregate new tokens/s of `interp serve` at 1, 4 and 16 concurrent clients,
unsteered vs every client with its own recipe.

smollm2-135m, fp32, 2 threads, `interp serve` in its own process on localhost, clients as asyncio
tasks of the official `openai` client (AsyncOpenAI) in this one. Each client sends REQUESTS completions in a row (a short
prompt, NEW_TOKENS greedy tokens, `ignore_eos` so every run generates the same count). Scenarios
run interleaved, REPS times; the median aggregate tokens/s (all clients' tokens / wall time) is
reported. Steered: client i uses recipe i of 16, each an Add on a residual site and a Clamp of 8
neurons on an MLP site (four layers of each, so recipes overlap in sites but never in edits).

Goals: 16 clients reach ≥ 4× the throughput of one (continuous batching works); per-request
recipes cost ≤ 5 % over unsteered at 16 clients. A check first: each recipe's text over the
server equals `interp.generate` with that recipe alone. Rewrites the "Serving (issue 27)" section.

    .venv/bin/python benchmarks/serve.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import httpx  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import interp  # noqa: E402
from benchmarks.capture import machine, versions  # noqa: E402
from benchmarks.goals import Goals  # noqa: E402
from benchmarks.results import publish  # noqa: E402

MODEL = "smollm2-135m"
SECTION = "## Serving (issue 27)"
CLIENTS = (1, 4, 16)
NEW_TOKENS = 32
REQUESTS = 2  # per client, one after the other
GOAL_SCALING = 4.0  # tokens/s at 16 clients over 1 client, unsteered
GOAL_STEER_COST = 1.05  # unsteered / steered tokens/s at 16 clients
PROMPTS = ["The weather today is", "My favourite food is", "In the morning I usually", "The history of the city",
           "Once upon a time", "The best way to learn", "Yesterday we went to", "Scientists have found"]


def recipes(model) -> dict[str, list]:
    """16 recipes: an Add (norm 8) at one of four residual sites, a Clamp of 8 neurons at one of four MLP sites."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for i in range(16):
        v = torch.randn(model.adapter.d_model, generator=g)
        neurons = torch.randperm(model.adapter.d_mlp, generator=g)[:8]
        out[f"r{i}"] = [interp.Add(f"blocks.{6 + 4 * (i % 4)}.hook_resid_post", v / v.norm() * 8.0),
                        interp.Clamp(f"blocks.{4 + 5 * (i // 4)}.mlp.hook_post", neurons, 3.0)]
    return out


async def _scenario(url: str, clients: int, steered: bool) -> tuple[float, int]:
    """(aggregate new tokens/s, tokens): each client sends REQUESTS completions; steered: client i on recipe i mod 16."""
    import openai

    c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)

    async def client(i: int) -> int:
        n = 0
        for k in range(REQUESTS):
            r = await c.completions.create(model=f"{MODEL}:r{i % 16}" if steered else MODEL,
                                           prompt=PROMPTS[(i + k) % len(PROMPTS)], max_tokens=NEW_TOKENS,
                                           temperature=0, extra_body={"ignore_eos": True})
            n += r.usage.completion_tokens
        return n

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(client(i) for i in range(clients))))
    rate = tokens / (time.perf_counter() - start)
    await c.close()
    return rate, tokens


def run_scenario(url: str, clients: int, steered: bool) -> tuple[float, int]:
    """(aggregate new tokens/s, tokens) with `clients` concurrent clients, each sending REQUESTS completions."""
    return asyncio.run(_scenario(url, clients, steered))


@contextmanager
def server_process(files: dict[str, Path], folder: Path, *, python: str | Path = sys.executable,
                   engine: str = "transformers", extra: tuple[str, ...] = ()):
    """`interp serve --engine ENGINE` run by `python` in its own process (2 threads), so that clients and
    server do not share a GIL; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(python), "-m", "cli.main", "serve", "--engine", engine, "--model", MODEL, "--port", str(port),
           "--recipe-dir", str(folder / f"uploads-{engine}"),
           *[a for n, f in files.items() for a in ("--recipe", f"{n}={f}")], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "2"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL if engine == "vllm" else None,
                            stderr=subprocess.DEVNULL if engine == "vllm" else None)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"interp serve --engine {engine} did not start")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="interp serve: throughput at 1/4/16 clients, unsteered vs a recipe each")
    ap.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    import openai

    from interp.recipes import save_recipe

    reference = interp.load_model(MODEL)
    goals = Goals("serve")
    with tempfile.TemporaryDirectory() as tmp:
        edits = recipes(reference)
        files = {name: save_recipe(Path(tmp) / f"{name}.safetensors", e, reference) for name, e in edits.items()}
        with server_process(files, Path(tmp)) as url:
            c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
            same = 0
            for name in ("r0", "r5", "r10", "r15"):
                got = c.completions.create(model=f"{MODEL}:{name}", prompt=PROMPTS[0], max_tokens=12,
                                           temperature=0).choices[0].text
                same += got == interp.generate(reference, PROMPTS[0], edits[name], max_new_tokens=12)[0]
            goals.check("recipes over the server equal interp.generate alone", f"{same}/4", "4/4", same == 4)
            run_scenario(url, 16, True)  # warm up: every recipe once
            reps = 2 if args.quick else 5
            rates: dict[tuple[int, bool], list[float]] = {(n, s): [] for n in CLIENTS for s in (False, True)}
            for rep in range(reps):
                for n in CLIENTS:
                    for steered in ((False, True) if rep % 2 == 0 else (True, False)):
                        rate, _ = run_scenario(url, n, steered)
                        rates[n, steered].append(rate)
                        print(f"rep {rep}: {n:2d} clients, {'steered' if steered else 'unsteered'}: "
                              f"{rate:.1f} tok/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    scaling = med[16, False] / med[1, False]
    cost = med[16, False] / med[16, True]
    rows = [f"| {n} | {med[n, False]:.1f} | {med[n, True]:.1f} | {med[n, False] / med[n, True]:.3f} | "
            f"{med[n, False] / med[1, False]:.2f} |" for n in CLIENTS]
    text = "\n".join([
        SECTION, "",
        f"Measured {dt.date.today()} by `benchmarks/serve.py` on {machine()} ({versions()}): `interp serve` "
        f"({MODEL}, fp32, 2 threads, transformers continuous batching) on localhost; each client sends {REQUESTS} "
        f"completions in a row ({NEW_TOKENS} greedy tokens each, ignore_eos) with the official openai client. "
        f"Aggregate new tokens/s, median of {reps} interleaved repetitions. Steered: each client its own recipe "
        f"(an Add on a residual site and a Clamp of 8 neurons on an MLP site; 16 recipes over 8 sites).", "",
        "| clients | unsteered tok/s | a recipe each, tok/s | unsteered / steered | unsteered vs 1 client |",
        "| ---: | ---: | ---: | ---: | ---: |", *rows, "",
        f"Goals: 16 clients ≥ {GOAL_SCALING:g}× one client ({scaling:.2f}×, {'pass' if scaling >= GOAL_SCALING else 'FAIL'}); "
        f"per-request recipes cost ≤ {(GOAL_STEER_COST - 1) * 100:.0f} % at 16 clients "
        f"({(cost - 1) * 100:+.1f} %, {'pass' if cost <= GOAL_STEER_COST else 'FAIL'}). "
        f"Each recipe's text over the server equals interp.generate alone: {same}/4.",
    ])
    publish(SECTION, text, write=not args.no_write)
    goals.at_least("tokens/s at 16 clients / 1 client, unsteered", scaling, GOAL_SCALING)
    goals.at_most("unsteered / a recipe per client, tokens/s at 16 clients", cost, GOAL_STEER_COST, fmt=".3f")
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
