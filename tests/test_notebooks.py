"""The notebooks in notebooks/: one per method, each executed top to bottom at its test size.

The slow test runs every notebook with INTERP_NOTEBOOK_SMALL=1 (the sizes each notebook picks for
tests: a few layers, few documents, few steps) in a fresh kernel whose working directory is the
repository root, and fails on any error or on a notebook that draws no figure.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
METHODS = ("capture_and_atlas", "lm_head_and_clamping", "language_neurons_and_foxp2", "hftp", "brain_axes",
           "shared_neurons_and_snrf", "milan", "dopamine")
CLI = re.compile(r"\binterp (analyze|steer|atlas|models|sites)\b")


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def test_there_is_one_notebook_per_method_each_introduced_with_its_cli_command() -> None:
    names = [p.stem for p in NOTEBOOKS]
    assert [re.sub(r"^\d+_", "", n) for n in names] == list(METHODS), names
    for path in NOTEBOOKS:
        nb = _read(path)
        first_md = next(c for c in nb.cells if c.cell_type == "markdown")
        assert nb.cells[0] is first_md, f"{path.name}: the first cell should be the markdown introduction"
        assert CLI.search(first_md.source), f"{path.name}: the introduction names no `interp` CLI command"
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert 'os.environ.get("INTERP_NOTEBOOK_SMALL") == "1"' in first_code.source, path.name
        # committed without outputs, to keep the repository small
        assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code"), path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_at_test_size_and_draws_a_figure(path, monkeypatch) -> None:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("INTERP_NOTEBOOK_SMALL", "1")  # the kernel inherits the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = _read(path)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    t0 = time.time()
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}")
    print(f"\n{path.name}: {time.time() - t0:.1f} s at test size")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], path.name
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} drew no figure"
