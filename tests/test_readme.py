"""The README and `interp --help` agree: every probe, steering method and subcommand the CLI offers is
documented, and every notebook is linked."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from cli.main import PROBES, STEER_METHODS, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_cli_choice_is_in_the_readme() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in commands:
        assert f"interp {name}" in README, name
    for probe in PROBES:
        assert f"--probe {probe}" in README, probe
    for method in STEER_METHODS:
        assert f"interp steer {method}" in README, method


def test_every_notebook_is_linked_and_every_link_exists() -> None:
    links = set(re.findall(r"\((notebooks/[^)]+\.ipynb)\)", README))
    files = {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert files and files <= links
    assert all((ROOT / link).is_file() for link in links)


# ------------------------------------------------------- figures: README against RESULTS.md, the tests and the code
RESULTS = (ROOT / "benchmarks" / "RESULTS.md").read_text()


def _section(text: str, heading: str) -> str:
    """From the line starting with `heading` to the next heading of the same level (or the end)."""
    start = text.index(heading)
    level = heading.split(" ", 1)[0] + " "
    end = text.find("\n" + level, start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def _between(text: str, first: str, last: str) -> str:
    start = text.index(first)
    return text[start:text.index(last, start)]


def test_dopamine_parameter_counts_and_lora_ratio_are_those_of_results() -> None:
    digits = _section(RESULTS, "## Dopamine digits")
    gates, lora = map(int, re.search(r"Trainable parameters: gates (\d+) .*?LoRA (\d+)", digits).groups())
    readme = _between(README, "**The digits experiment**", "**On smollm2-135m**")
    ratios = re.findall(r"([\d.]+)× (?:more|the gates' parameters)", readme)
    assert ratios and set(ratios) == {f"{lora / gates:.1f}"}, (ratios, lora, gates)
    lm = _section(RESULTS, "## Dopamine on smollm2-135m")
    gates, lora = map(int, re.search(r"Trainable parameters: gates (\d+) .*?LoRA (\d+)", lm).groups())
    assert re.search(rf"\| gates \(hard\) \|.*\| {gates:,} \|", README) and re.search(rf"\| LoRA r=4 .*\| {lora:,} \|", README)


def test_snrf_sample_and_question_counts_are_those_the_tests_and_the_cli_use() -> None:
    source = (ROOT / "tests" / "test_shared_neurons_testbed.py").read_text()
    n_samples = int(re.search(r"^N_SAMPLES = (\d+)", source, re.M)[1])
    n_eval = int(re.search(r"^N_EVAL = (\d+)", source, re.M)[1])
    reduced = re.search(r"what `tests/test_shared_neurons_testbed.py` runs, with (\d+)\s+samples and (\d+) questions "
                        r"per task", README)
    assert reduced and (int(reduced[1]), int(reduced[2])) == (n_samples, n_eval)
    args = build_parser().parse_args(["analyze", "--probe", "shared-neurons", "--out", "x"])  # the command's defaults
    full = re.search(r"Measured on the full testbed with the command above \((\d+) image-product samples and\s+their "
                     r"text twins, ratio ([\d.]+); (\d+) held-out questions per task\)", README)
    assert full and (int(full[1]), float(full[2]), int(full[3])) == (args.samples, args.ratio, args.held_out)


def test_testbed_build_time_is_the_one_the_code_states() -> None:
    module = re.search(r"`python -m ([\w.]+) \[--reduced\]`", README)[1]  # the testbed module README names
    doc = importlib.import_module(module).TestbedSpec.for_run.__doc__
    code = re.search(r"reduced one \((\d+)–(\d+) minutes", doc).groups()
    bullet = re.search(r"\*\*Build time\*\*[^\n]*\n?[^\n]*", README)[0]
    said = re.search(r"(\d+)–(\d+) min", bullet)
    assert said and said.groups() == code, (bullet, code)


def test_the_hindi_perplexity_figure_is_the_measured_one() -> None:
    """README's figure for FOXP2 on gemma3-270m in Hindi is the one its measurement states (the test's
    reason, or the benchmark and RESULTS.md once it runs there)."""
    figures = re.findall(r"([\d.]+(?:[–-][\d.]+)?)×\s+the\s+matched\s+perplexity", README)
    assert figures
    sources = " ".join(p.read_text() for p in (ROOT / "tests" / "test_foxp2.py", ROOT / "benchmarks" / "RESULTS.md",
                                                ROOT / "benchmarks" / "foxp2_hindi.py") if p.is_file())
    stated = {f.replace("–", "-") for f in re.findall(r"([\d.]+(?:[–-][\d.]+)?)×\s+the\s+matched\s+perplexity", sources)}
    assert {f.replace("–", "-") for f in figures} <= stated, (figures, stated)
