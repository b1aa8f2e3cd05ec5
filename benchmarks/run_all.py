"""Run every benchmark (continuing past failures) and end with one table: benchmark, goal, measured, result.

    .venv/bin/python benchmarks/run_all.py                     # all of BENCHMARKS (`make bench`)
    .venv/bin/python benchmarks/run_all.py --only load lm_head # a few, by name
    .venv/bin/python benchmarks/run_all.py --list
    .venv/bin/python benchmarks/run_all.py --jobs 2            # the long acceptance runs two at a time
    .venv/bin/python benchmarks/run_all.py --run-dir benchmarks/runs/X --resume   # finish an interrupted run

Each script runs in its own process with INTERP_BENCH_RUN set to the run folder (default
benchmarks/runs/<UTC time>/); it records its goals there through `benchmarks.goals.Goals`.
Its output goes to the terminal and to <run folder>/<name>.log; the table also to
summary.md and summary.json. The speed benchmarks (SPEED) always run first and alone;
with --jobs N the acceptance runs (ACCEPTANCE, single-threaded training and generation) then
run N at a time, each on cores / N threads, their output only in their logs. Exit status 1
when any goal failed, a script failed or crashed, or a script recorded no goal; else 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.goals import NAME_ENV, RUN_ENV, read_record  # noqa: E402

# One line per benchmark: a script in benchmarks/ and its arguments. Its name (for --only and the
# table) is the script's file name without .py. The speed ratios run first and one at a time (they want a
# quiet machine); the long acceptance runs may then run side by side (`--jobs`).
SPEED: list[str] = [
    "capture.py",
    "load.py",
    "steering.py",
    "lm_head.py",
    "language_neurons.py",
    "milan_describe.py",
    "scale.py",
    "serve.py",
    "vllm.py",
    "cards.py",
    "eval.py",
]
ACCEPTANCE: list[str] = [  # longest first, so that runs side by side end together
    "snrf.py",
    "foxp2.py",
    "foxp2_hindi.py",
    "foxp2_eval.py",
    "milan_known_roles.py",
    "language_ablation.py",
    "milan_ood.py",
    "dopamine_lm.py",
    "hftp.py",
    "dopamine_digits.py",
]
BENCHMARKS: list[str] = SPEED + ACCEPTANCE


@dataclass(frozen=True)
class Row:
    benchmark: str
    goal: str
    measured: str
    target: str
    ok: bool


def entry_name(entry: str) -> str:
    return Path(shlex.split(entry)[0]).stem


def run_one(entry: str, run: Path, *, folder: Path = HERE, timeout: float | None = None, stream: bool = True,
            threads: int | None = None) -> list[Row]:
    """Run one benchmark entry; its rows for the table (goals, or one row saying why there are none).
    `stream`: echo its output here as well as into its log; `threads`: the child's OMP/MKL thread count."""
    name = entry_name(entry)
    script, *args = shlex.split(entry)
    record, log = run / f"{name}.json", run / f"{name}.log"
    record.unlink(missing_ok=True)
    env = {**os.environ, RUN_ENV: str(run), NAME_ENV: name}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, str(folder / script), *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        try:
            for line in proc.stdout:
                if stream:
                    sys.stdout.write(line)
                out.write(line)
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    seconds = time.perf_counter() - t0
    rows = []
    if record.is_file():
        goals, status = read_record(record)
        rows = _goal_rows(name, goals)
        if code != status:  # crashed or timed out after recording, or exited 0 over failed goals
            rows.append(Row(name, "(script)", "timed out" if code is None else f"exit {code}",
                            f"exit {status}", False))
    if not rows:
        why = "timed out" if code is None else f"exit {code}, no goal recorded"
        rows.append(Row(name, "(script)", why, "goals recorded", False))
    print(f"--- {name}: {'ok' if all(r.ok for r in rows) else 'FAILED'} in {seconds:.0f} s", flush=True)
    return rows


def _goal_rows(name: str, goals) -> list[Row]:
    return [Row(name, g.name, g.measured, g.target, g.ok) for g in goals]


def recorded_rows(entry: str, run: Path) -> list[Row] | None:
    """The rows of a benchmark that already finished in `run` (its goal record is there), else None."""
    name = entry_name(entry)
    record = run / f"{name}.json"
    if not record.is_file():
        return None
    return _goal_rows(name, read_record(record)[0]) or None


def run_all(entries: list[str], run: Path, *, folder: Path = HERE, timeout: float | None = None, jobs: int = 1,
            resume: bool = False, parallel: set[str] | None = None) -> list[Row]:
    """Run `entries` in order and return their rows in that order. With `jobs` > 1, the entries named in
    `parallel` (default: ACCEPTANCE's) run up to `jobs` at a time once the others have run alone, each on
    cores // jobs threads, their output only in their logs. `resume`: a benchmark whose record is already in
    `run` is not run again; its recorded goals go into the table."""
    run.mkdir(parents=True, exist_ok=True)
    parallel = {entry_name(e) for e in ACCEPTANCE} if parallel is None else parallel
    done = {e: recorded_rows(e, run) for e in entries} if resume else {}
    todo = [e for e in entries if done.get(e) is None]
    alone = [e for e in todo if jobs <= 1 or entry_name(e) not in parallel]
    side_by_side = [e for e in todo if e not in alone]
    rows: dict[str, list[Row]] = {e: r for e, r in done.items() if r is not None}
    for e in rows:
        print(f"=== benchmarks/{e}: recorded in {run.name}, not run again (--resume)", flush=True)
    for i, entry in enumerate(alone, 1):
        print(f"=== [{i}/{len(todo)}] benchmarks/{entry}", flush=True)
        rows[entry] = run_one(entry, run, folder=folder, timeout=timeout)
    if side_by_side:
        from concurrent.futures import ThreadPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // jobs)
        print(f"=== {len(side_by_side)} benchmarks, {jobs} at a time on {threads} thread(s) each: "
              f"{', '.join(entry_name(e) for e in side_by_side)} (output in {run}/<name>.log)", flush=True)
        with ThreadPoolExecutor(jobs) as pool:
            futures = {e: pool.submit(run_one, e, run, folder=folder, timeout=timeout, stream=False,
                                      threads=threads) for e in side_by_side}
            rows.update({e: f.result() for e, f in futures.items()})
    return [r for e in entries for r in rows[e]]


def table(rows: list[Row]) -> str:
    """The one table, as plain text columns."""
    head = ("benchmark", "goal", "measured", "target", "result")
    cells = [head] + [(r.benchmark, r.goal, r.measured, r.target, "pass" if r.ok else "FAIL") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(head))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = sum(not r.ok for r in rows)
    lines.append(f"{len(rows) - failed} of {len(rows)} goals met" + (f"; {failed} FAILED" if failed else ""))
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    out = ["| benchmark | goal | measured | target | result |", "| --- | --- | ---: | ---: | --- |"]
    out += [f"| {r.benchmark} | {r.goal} | {r.measured} | {r.target} | {'pass' if r.ok else '**FAIL**'} |" for r in rows]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (names as in --list)")
    ap.add_argument("--run-dir", type=Path, help="where records, logs and the summary go "
                    "(default benchmarks/runs/<UTC time>)")
    ap.add_argument("--timeout", type=float, help="seconds per benchmark (default: none)")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="run the long acceptance benchmarks N at a time, after the speed ones (default 1)")
    ap.add_argument("--resume", action="store_true",
                    help="with --run-dir of an earlier run: skip the benchmarks recorded there, run the rest")
    ap.add_argument("--list", action="store_true", help="print the benchmarks and exit")
    args = ap.parse_args(argv)
    names = [entry_name(e) for e in BENCHMARKS]
    if args.list:
        print("\n".join(f"{n:20s} benchmarks/{e}" for n, e in zip(names, BENCHMARKS)))
        return 0
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        print(f"run_all: error: no benchmark named {', '.join(unknown)} (have: {', '.join(names)})", file=sys.stderr)
        return 2
    entries = [e for e, n in zip(BENCHMARKS, names) if not args.only or n in args.only]
    run = args.run_dir or HERE / "runs" / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if args.jobs < 1:
        print("run_all: error: --jobs must be at least 1", file=sys.stderr)
        return 2
    if args.resume and not args.run_dir:
        print("run_all: error: --resume needs --run-dir (the run to continue)", file=sys.stderr)
        return 2
    rows = run_all(entries, run, folder=HERE, timeout=args.timeout, jobs=args.jobs, resume=args.resume)
    text = table(rows)
    (run / "summary.md").write_text(markdown(rows), encoding="utf-8")
    (run / "summary.json").write_text(json.dumps([asdict(r) for r in rows], indent=1, ensure_ascii=False),
                                      encoding="utf-8")
    print("\n" + text)
    print(f"records and logs: {run}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
