"""The benchmarks' goal records and `make bench`'s runner: a failed goal, a crash or a silent script fails the run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import run_all  # noqa: E402
from benchmarks.goals import NAME_ENV, RUN_ENV, Goals, read_record  # noqa: E402
from benchmarks.snrf import check_goals as snrf_goals  # noqa: E402


def test_goal_verdicts_and_exit_status(monkeypatch, tmp_path):
    monkeypatch.delenv(NAME_ENV, raising=False)
    monkeypatch.setenv(RUN_ENV, str(tmp_path))
    g = Goals("demo")
    assert g.at_least("a", 0.85, 0.85).ok and not g.at_least("b", 0.84, 0.85).ok
    assert g.at_most("c", 1.03, 1.03).ok and not g.at_most("d", math.nan, 1.03).ok
    assert not g.above("e", 0.0, 0.0).ok and g.below("f", 0.049, 0.05).ok
    assert g.finish() == 1
    goals, status = read_record(tmp_path / "demo.json")
    assert status == 1 and [x.name for x in goals] == list("abcdef")
    assert [x.ok for x in goals] == [True, False, True, False, False, True]
    assert goals[1].measured == "0.84" and goals[1].target == "≥ 0.85"

    ok = Goals("fine")
    ok.check("x", "yes", "yes", True)
    assert ok.finish() == 0 and read_record(tmp_path / "fine.json")[1] == 0
    assert Goals("silent").finish() == 1  # no goal checked is no pass


SCRIPT = """import sys
sys.path.insert(0, {root!r})
from benchmarks.goals import Goals
{body}
"""


def _script(folder: Path, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(SCRIPT.format(root=str(ROOT), body=body))
    return f"{name}.py"


def test_runner_reports_every_failure_in_one_table(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    entries = [
        _script(bench, "good", "g = Goals('good'); g.at_least('speed', 2.5, 2.0); sys.exit(g.finish())"),
        _script(bench, "slow", "g = Goals('slow'); g.at_least('speed', 1.5, 2.0); sys.exit(g.finish())"),
        _script(bench, "crash", "raise RuntimeError('boom')"),
        _script(bench, "mute", "print('no goals here')"),
        _script(bench, "liar", "g = Goals('liar'); g.at_least('speed', 1.0, 2.0); g.finish()"),  # exits 0 anyway
    ]
    rows = run_all.run_all(entries, tmp_path / "run", folder=bench)
    verdict = {(r.benchmark, r.goal): r.ok for r in rows}
    assert verdict == {("good", "speed"): True, ("slow", "speed"): False, ("crash", "(script)"): False,
                       ("mute", "(script)"): False, ("liar", "speed"): False, ("liar", "(script)"): False}
    text = run_all.table(rows)
    assert text.splitlines()[0].split() == ["benchmark", "goal", "measured", "target", "result"]
    assert "1 of 6 goals met; 5 FAILED" in text
    assert "boom" in (tmp_path / "run" / "crash.log").read_text()


def test_runner_main_exit_status(tmp_path, monkeypatch):
    bench = tmp_path / "bench"
    bench.mkdir()
    good = _script(bench, "good", "g = Goals('good'); g.below('p', 0.01, 0.05); sys.exit(g.finish())")
    bad = _script(bench, "bad", "g = Goals('bad'); g.below('p', 0.2, 0.05); sys.exit(g.finish())")
    monkeypatch.setattr(run_all, "HERE", bench)
    monkeypatch.setattr(run_all, "BENCHMARKS", [good, bad])
    assert run_all.main(["--only", "good", "--run-dir", str(tmp_path / "r1")]) == 0
    assert run_all.main(["--run-dir", str(tmp_path / "r2")]) == 1
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert [(s["benchmark"], s["ok"]) for s in summary] == [("good", True), ("bad", False)]
    assert run_all.main(["--only", "nope"]) == 2


def test_side_by_side_keeps_the_order_and_resume_skips_what_is_recorded(tmp_path, monkeypatch, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    body = "import os; print('omp=' + str(os.environ.get('OMP_NUM_THREADS'))); g = Goals({n!r}); " \
           "g.at_least('x', {v}, 1.0); sys.exit(g.finish())"
    entries = [_script(bench, n, body.format(n=n, v=v)) for n, v in (("speed", 2), ("a", 3), ("b", 0), ("c", 4))]
    run = tmp_path / "run"
    rows = run_all.run_all(entries, run, folder=bench, jobs=2, parallel={"a", "b", "c"})
    assert [(r.benchmark, r.ok) for r in rows] == [("speed", True), ("a", True), ("b", False), ("c", True)]
    out = capsys.readouterr().out
    assert "2 at a time" in out and out.count("omp=") == 1  # the side-by-side ones write only to their logs
    threads = max(1, (__import__("os").cpu_count() or 1) // 2)
    assert f"omp={threads}" in (run / "a.log").read_text()
    (run / "b.json").unlink()  # as if the run had stopped during b
    (run / "c.log").write_text("kept")
    again = run_all.run_all(entries, run, folder=bench, resume=True)
    assert [(r.benchmark, r.ok) for r in again] == [(r.benchmark, r.ok) for r in rows]
    assert (run / "c.log").read_text() == "kept" and (run / "b.json").is_file()  # c not rerun, b rerun
    monkeypatch.setattr(run_all, "HERE", bench)
    monkeypatch.setattr(run_all, "BENCHMARKS", entries)
    assert run_all.main(["--resume"]) == 2 and run_all.main(["--jobs", "0"]) == 2


def test_every_listed_benchmark_exists_and_records_goals():
    for entry in run_all.BENCHMARKS:
        script = ROOT / "benchmarks" / entry.split()[0]
        assert script.is_file(), entry
        assert "Goals(" in script.read_text(), f"{entry} records no goals"


def _snrf_params(*, dip: bool = False, product: float = 0.125) -> dict:
    layers = list(range(4))
    overlap = {m: {"layers": layers, "overlap": [0.8] * 4, "random": [0.25] * 4} for m in ("q", "k", "v", "o", "up")}
    if dip:
        overlap["v"]["overlap"][2] = 0.2
    amp = [{"alpha": a, "units": u, "changed": c, "accuracy": 0.1}
           for a, shared in ((1.5, 0.885), (2.0, 0.99))
           for u, c in [("shared", shared)] + [(f"random (seed {k})", 0.4 + 0.1 * k) for k in range(3)]]
    snrf = {"base VLM": {"product": 0.015}, "SNRF (r=4, β=0.5)": {"product": product},
            "full delta (β=0.5)": {"product": 0.255}, "random units (seed 0)": {"product": 0.055}}
    return {"overlap": overlap, "tables": {"amplification": amp, "snrf beta=0.5": snrf}}


def test_snrf_goals_read_the_atlas_tables(monkeypatch):
    monkeypatch.delenv(RUN_ENV, raising=False)
    goals = snrf_goals(_snrf_params())
    assert [g.ok for g in goals.goals] == [True, True, True, True] and goals.finish() == 0
    assert goals.goals[1].target == "> 0.500 (random)"
    bad = snrf_goals(_snrf_params(dip=True, product=0.01))
    assert [g.ok for g in bad.goals] == [False, True, True, False]
    assert "v L2" in bad.goals[0].measured
    for table in ("snrf beta=0.5", "amplification"):  # a table the run did not make is a failed goal, not a skip
        missing = _snrf_params()
        del missing["tables"][table]
        got = snrf_goals(missing).goals
        assert [g.measured for g in got if not g.ok] == ["not measured"]


def test_results_sections_are_replaced_in_place_and_others_kept(tmp_path, monkeypatch):
    from benchmarks import results

    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    results.write_section("## A", "## A\nfirst")
    results.write_section("## B", "## B\nsecond")
    results.write_section("## A", "## A\nagain")
    assert results.RESULTS.read_text() == "# Benchmark results\n\n## A\nagain\n\n## B\nsecond\n"
    assert [p.name for p in tmp_path.iterdir() if p.name != ".RESULTS.md.lock"] == ["RESULTS.md"]  # no temp left
