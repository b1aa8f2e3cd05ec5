"""The README and `interp --help` agree: every probe, steering method and subcommand the CLI offers is
documented, and every notebook is linked."""

from __future__ import annotations

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
