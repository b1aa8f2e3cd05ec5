"""The Space's files agree with the project: its front matter names app.py and the pinned Gradio, and its
requirements pin what pyproject.toml pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip().strip('",'))
        if m:
            out[m[1].lower()] = m[2]
    return out


def test_space_front_matter_and_requirements_match_the_project() -> None:
    meta = (ROOT / "spaces" / "README.md").read_text().split("---")[1]
    assert re.search(r"^app_file: app\.py$", meta, re.M) and re.search(r"^sdk: gradio$", meta, re.M)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = _pins(project["dependencies"] + project["optional-dependencies"]["app"]
                   + project["optional-dependencies"]["dopamine"])
    space = _pins((ROOT / "spaces" / "requirements.txt").read_text().splitlines())
    assert re.search(rf"^sdk_version: {re.escape(pinned['gradio'])}$", meta, re.M)
    assert {k: v for k, v in space.items() if k in pinned} == pinned
    assert (ROOT / "app.py").is_file()
