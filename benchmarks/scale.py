"""Data-parallel throughput (issue 13): the statistics capture on 1 and 2 processes, and a projection.

On smollm2-135m, `interp analyze`'s statistics job (ActivationFrequency + Moments + TopK(16) on
every layer's mlp.hook_post, bf16, batches of 8 × up to 128 tokens of Bible verses) runs
through `interp.runs.stream` as

  (1) one process, 1 thread                    the unit of work
  (2) one process, all threads                 what a single process gets from the machine
  (3) N processes (gloo), 1 thread each        data-parallel: each rank captures whole batches,
                                               then the reducers merge on rank 0 (timed apart)

and reports tokens/s, the merge time and the data-parallel efficiency (3) / (N × (1)), the goal:
at least 0.8 (the exit status says whether it is met). Each
configuration runs in fresh processes, timed from a barrier after the model loads to the end
of the merge. The projection sizes a Llama-3.1-8B atlas over 100 M tokens on G GPUs from
2 × parameters FLOPs per token (forward only), a GPU's dense bf16 peak, an assumed model FLOPs
utilisation (MFU; not measured here: no GPU was available) and the measured efficiency; memory
from `interp.memory.estimate`.

    .venv/bin/python benchmarks/scale.py                 # ~4 min on 2 cores; writes RESULTS.md
    .venv/bin/python benchmarks/scale.py --gpus 8 --gpu-tflops 989 --mfu 0.35 --no-write
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

TITLE = "## Data-parallel scale (issue 13)"
GOAL_EFFICIENCY = 0.8  # N one-thread processes give at least 80 % of N × one process (measured 0.98; runs vary 0.79-1.00)


def _corpus(verses: int) -> list[str]:
    from probes.language_counts import bible_texts

    t = bible_texts(["en", "fr", "es", "de"], limit=verses)
    return [x for lang in ("en", "fr", "es", "de") for x in t[lang]]


def _rank(rank: int, world: int, port: int, threads: int, verses: int, queue) -> None:
    import interp
    from interp.runs import stream

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = interp.load_model("smollm2-135m", dtype="bfloat16")
    docs = _corpus(verses)
    sites = model.adapter.expand("mlp.hook_post")
    reducers = [interp.ActivationFrequency(), interp.Moments(), interp.TopK(16)]
    with interp.capture(model, sites, reducers) as run:
        stream(run, docs, batch_size=8, max_length=128, progress=False, merge=False)  # warm-up pass
    reducers = [interp.ActivationFrequency(), interp.Moments(), interp.TopK(16)]
    with interp.capture(model, sites, reducers) as run:
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        stream(run, docs, batch_size=8, max_length=128, progress=False, merge=False)
        t1 = time.perf_counter()
        if world > 1:
            from interp.distributed import gather_reducers, sum_over_ranks

            dist.barrier()
            t1 = time.perf_counter()  # every rank done capturing
            gather_reducers(run.reducers)
            tokens = int(sum_over_ranks(run.tokens_seen))
        else:
            tokens = run.tokens_seen
        t2 = time.perf_counter()
    if rank == 0:
        queue.put({"tokens": tokens, "capture_s": t1 - t0, "merge_s": t2 - t1, "total_s": t2 - t0})
    if world > 1:
        dist.destroy_process_group()


def measure(world: int, threads: int, verses: int, repeats: int = 1) -> dict:
    """The run with the median tokens/s of `repeats` fresh runs."""
    runs = sorted((_measure_once(world, threads, verses) for _ in range(repeats)), key=lambda r: r["tokens_per_s"])
    return runs[len(runs) // 2]


def _measure_once(world: int, threads: int, verses: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(world, port, threads, verses, queue), nprocs=world, start_method="spawn")
    out = queue.get(timeout=60)
    out["tokens_per_s"] = out["tokens"] / out["total_s"]
    return out


def project(tokens_per_s_cpu: float, efficiency: float, *, gpus: int, gpu_tflops: float, mfu: float,
            tokens: float = 100e6) -> dict:
    from interp.memory import LLAMA_31_8B, estimate

    est = estimate(LLAMA_31_8B, dtype="bfloat16", sites=[f"blocks.{i}.mlp.hook_post" for i in range(32)],
                   batch_size=8, max_length=1024)
    flops_per_token = 2 * est.parameters
    per_gpu = gpu_tflops * 1e12 * mfu / flops_per_token  # tokens/s on one GPU
    total = per_gpu * gpus * (efficiency if gpus > 1 else 1.0)
    return {"parameters": est.parameters, "memory": est.text(), "tokens_per_s_gpu": per_gpu,
            "tokens_per_s": total, "hours": tokens / total / 3600, "gpus": gpus}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--verses", type=int, default=48, help="verses per language (4 languages)")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gpu-tflops", type=float, default=989.0, help="dense bf16 peak (H100 / H200 SXM: 989)")
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation of a bf16 forward")
    p.add_argument("--repeats", type=int, default=3, help="fresh runs per configuration; the median is kept")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    one = measure(1, 1, args.verses, args.repeats)
    one_all = measure(1, cores, args.verses, args.repeats)
    many = measure(args.processes, max(1, cores // args.processes), args.verses, args.repeats)
    eff = many["tokens_per_s"] / (args.processes * one["tokens_per_s"])
    proj = project(one["tokens_per_s"], eff, gpus=args.gpus, gpu_tflops=args.gpu_tflops, mfu=args.mfu)
    rows = [("(1) 1 process × 1 thread", one), (f"(2) 1 process × {cores} threads", one_all),
            (f"(3) {args.processes} processes × {max(1, cores // args.processes)} thread (gloo)", many)]
    lines = [TITLE, "",
             f"`benchmarks/scale.py`, {time.strftime('%Y-%m-%d')}, {cores} CPU cores, torch {torch.__version__}. "
             f"smollm2-135m, bf16, statistics reducers on all 30 `mlp.hook_post` sites, "
             f"{4 * args.verses} Bible verses (en, fr, es, de) in batches of 8 × ≤ 128 tokens; "
             f"timed from a barrier after loading to the end of the merge (a warm-up pass first); median of {args.repeats} "
             "fresh runs per configuration.", "",
             "| configuration | tokens | tokens/s | capture s | merge s |", "|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['tokens']} | {r['tokens_per_s']:.0f} | {r['capture_s']:.2f} | {r['merge_s']:.2f} |")
    lines += ["", f"Data-parallel efficiency (3) / ({args.processes} × (1)): **{eff:.2f}** (goal ≥ {GOAL_EFFICIENCY:g}: "
              f"{'pass' if eff >= GOAL_EFFICIENCY else 'FAIL'}). "
              f"(3) / (2): {many['tokens_per_s'] / one_all['tokens_per_s']:.2f} — on one CPU host, processes and "
              "threads share the same cores; the gain that matters is across GPUs and hosts, where every rank has "
              "its own device and only the merge (timed above) is shared.", "",
              f"**Projection: Llama-3.1-8B over 100 M tokens on {args.gpus} GPUs** "
              f"({args.gpu_tflops:g} dense bf16 TFLOP/s each, assumed MFU {args.mfu:g}, efficiency {eff:.2f} as "
              "measured above): "
              f"{proj['parameters'] / 1e9:.2f} B parameters → {2 * proj['parameters'] / 1e9:.1f} GFLOP per token; "
              f"{proj['tokens_per_s_gpu']:.0f} tokens/s per GPU; {proj['tokens_per_s']:.0f} tokens/s in all; "
              f"**{proj['hours']:.2f} h**. Memory per GPU (batch 8 × 1024): {proj['memory']} — one 80 GB GPU holds "
              "the model; no split needed. The MFU is an assumption, not a measurement (no GPU in this run)."]
    text = "\n".join(lines)
    from benchmarks.results import publish

    publish(TITLE, text, write=not args.no_write)
    from benchmarks.goals import Goals

    goals = Goals("scale")
    goals.at_least(f"data-parallel efficiency, {args.processes} gloo processes / ({args.processes} × one process)",
                   eff, GOAL_EFFICIENCY)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
