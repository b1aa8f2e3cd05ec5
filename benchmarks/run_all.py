"""Run every benchmark (continuing past failures) and end with one table: benchmark, goal, measured, result.

    .venv/bin/python benchmarks/run_all.py                     # all of BENCHMARKS (`make bench`)
    .venv/bin/python benchmarks/run_all.py --only load lm_head # a few, by name
    .venv/bin/python benchmarks/run_all.py --list

Each script runs in its own process with INTERP_BENCH_RUN set to the run folder (default
benchmarks/runs/<UTC time>/); it records its goals there through `benchmarks.goals.Goals`.
Its output goes to the terminal and to <run folder>/<name>.log; the table also to
summary.md and summary.json. Exit status 1 when any goal failed, a script failed or crashed,
or a script recorded no goal; else 0.
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
# table) is the script's file name without .py.
BENCHMARKS: list[str] = [
    "capture.py",
    "load.py",
    "steering.py",
    "lm_head.py",
    "language_neurons.py",
    "milan_describe.py",
    "milan_known_roles.py",
    "dopamine_digits.py",
    "dopamine_lm.py",
    "scale.py",
    "snrf.py",
    "foxp2.py",
    "foxp2_hindi.py",
    "hftp.py",
]


@dataclass(frozen=True)
class Row:
    benchmark: str
    goal: str
    measured: str
    target: str
    ok: bool


def entry_name(entry: str) -> str:
    return Path(shlex.split(entry)[0]).stem


def run_one(entry: str, run: Path, *, folder: Path = HERE, timeout: float | None = None) -> list[Row]:
    """Run one benchmark entry; its rows for the table (goals, or one row saying why there are none)."""
    name = entry_name(entry)
    script, *args = shlex.split(entry)
    record, log = run / f"{name}.json", run / f"{name}.log"
    record.unlink(missing_ok=True)
    env = {**os.environ, RUN_ENV: str(run), NAME_ENV: name}
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, str(folder / script), *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        try:
            for line in proc.stdout:
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
        rows = [Row(name, g.name, g.measured, g.target, g.ok) for g in goals]
        if code != status:  # crashed or timed out after recording, or exited 0 over failed goals
            rows.append(Row(name, "(script)", "timed out" if code is None else f"exit {code}",
                            f"exit {status}", False))
    if not rows:
        why = "timed out" if code is None else f"exit {code}, no goal recorded"
        rows.append(Row(name, "(script)", why, "goals recorded", False))
    print(f"--- {name}: {'ok' if all(r.ok for r in rows) else 'FAILED'} in {seconds:.0f} s", flush=True)
    return rows


def run_all(entries: list[str], run: Path, *, folder: Path = HERE, timeout: float | None = None) -> list[Row]:
    run.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for i, entry in enumerate(entries, 1):
        print(f"=== [{i}/{len(entries)}] benchmarks/{entry}", flush=True)
        rows += run_one(entry, run, folder=folder, timeout=timeout)
    return rows


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
    rows = run_all(entries, run, folder=HERE, timeout=args.timeout)
    text = table(rows)
    (run / "summary.md").write_text(markdown(rows), encoding="utf-8")
    (run / "summary.json").write_text(json.dumps([asdict(r) for r in rows], indent=1, ensure_ascii=False),
                                      encoding="utf-8")
    print("\n" + text)
    print(f"records and logs: {run}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
