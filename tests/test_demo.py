"""`make demo` on the installed tree: writes the atlas and the report within 5 minutes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from atlases import load_atlas

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_writes_atlas_and_report(tmp_path):
    out = tmp_path / "demo-atlas"
    proc = subprocess.run(["make", "-C", str(ROOT), "demo", f"DEMO_OUT={out}"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    atlas = load_atlas(out, model="smollm2-135m")
    assert len(atlas.sites) == 30  # every layer's neurons
    assert "<mark>" in (out / "report.html").read_text()
