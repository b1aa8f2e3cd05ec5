"""A benchmark's goals: each one an explicit check, recorded for `benchmarks/run_all.py`, and the exit status.

    from benchmarks.goals import Goals

    goals = Goals("capture")                                   # the benchmark's name (file name of its record)
    goals.at_least("(b)/(a): capture overhead, fp32", 1.22, 0.85)
    goals.at_most("i8 / i0: 8 edits over none", 0.95, 1.03, fmt=".3f")
    goals.check("TransformerLens saw the same activations", "yes", "yes", ok=True)
    return goals.finish()                                      # prints them; 0 if all met, else 1

`finish()` writes `<name>.json` into the folder named by the environment variable
`INTERP_BENCH_RUN` (when set; `run_all.py` sets it, and `INTERP_BENCH_NAME` to override the
name): {"benchmark", "goals": [{"name", "measured", "target", "ok"}], "status"}. A benchmark
that meets no goal it checked, or checks none, is a failure in `run_all.py`'s table.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

RUN_ENV, NAME_ENV = "INTERP_BENCH_RUN", "INTERP_BENCH_NAME"


@dataclass(frozen=True)
class Goal:
    """One goal: what is promised, the measured value and the target as text, and whether it is met."""

    name: str
    measured: str
    target: str
    ok: bool


class Goals:
    """The goals one benchmark run checks, in order."""

    def __init__(self, benchmark: str):
        self.benchmark = os.environ.get(NAME_ENV) or benchmark
        self.goals: list[Goal] = []

    def check(self, name: str, measured: str, target: str, ok: bool) -> Goal:
        """Record a goal whose verdict the caller computed (measured and target as display text)."""
        goal = Goal(name, str(measured), str(target), bool(ok))
        self.goals.append(goal)
        return goal

    def at_least(self, name: str, value: float, target: float, fmt: str = ".2f") -> Goal:
        """Met when value ≥ target (a NaN is never met)."""
        return self.check(name, format(value, fmt), f"≥ {target:{fmt}}", value >= target)

    def at_most(self, name: str, value: float, target: float, fmt: str = ".2f") -> Goal:
        """Met when value ≤ target (a NaN is never met)."""
        return self.check(name, format(value, fmt), f"≤ {target:{fmt}}", value <= target)

    def above(self, name: str, value: float, target: float, fmt: str = ".2f") -> Goal:
        """Met when value > target (strictly)."""
        return self.check(name, format(value, fmt), f"> {target:{fmt}}", value > target)

    def below(self, name: str, value: float, target: float, fmt: str = ".2f") -> Goal:
        """Met when value < target (strictly)."""
        return self.check(name, format(value, fmt), f"< {target:{fmt}}", value < target)

    @property
    def ok(self) -> bool:
        """All recorded goals met, and at least one recorded."""
        return bool(self.goals) and all(g.ok for g in self.goals)

    def status(self) -> int:
        return 0 if self.ok else 1

    def finish(self) -> int:
        """Print every goal, write the record (if INTERP_BENCH_RUN is set) and return the exit status."""
        for g in self.goals:
            print(f"goal {g.name}: {g.measured} (target {g.target}) {'PASS' if g.ok else 'FAIL'}")
        if not self.goals:
            print(f"{self.benchmark}: no goal was checked")
        run = os.environ.get(RUN_ENV)
        if run:
            write_record(Path(run), self.benchmark, self.goals, self.status())
        return self.status()


def write_record(run: Path, benchmark: str, goals: list[Goal], status: int) -> Path:
    """Write `run/<benchmark>.json` atomically; returns its path."""
    run.mkdir(parents=True, exist_ok=True)
    path = run / f"{benchmark}.json"
    data = {"benchmark": benchmark, "goals": [asdict(g) for g in goals], "status": status}
    fd, tmp = tempfile.mkstemp(dir=run, prefix=f".{benchmark}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)
    return path


def read_record(path: Path) -> tuple[list[Goal], int]:
    """(goals, status) from a record written by `write_record`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Goal(**g) for g in data["goals"]], int(data["status"])
