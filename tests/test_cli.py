"""The `interp` command: happy paths write an atlas + report; bad input exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import interp
from atlases import load_atlas
from cli_checks import run_cli
from cli.main import main


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_offline_names(capsys):
    code, out, _ = _run(["models"], capsys)
    assert code == 0
    assert "smollm2-135m (default)\tinstalled" in out
    assert "gemma3-270m" in out


def test_sites_lists_every_site(capsys, smollm2):
    code, out, _ = _run(["sites", "--model", "smollm2-135m"], capsys)
    assert code == 0
    lines = [l for l in out.splitlines() if not l.startswith("#")]
    assert lines == smollm2.sites()
    assert "30 layers" in out


@pytest.mark.slow
def test_analyze_writes_atlas_and_report(tmp_path, capsys):
    out_dir = tmp_path / "atlas"
    code, out, err = _run(["analyze", "--corpus", "demo", "--out", str(out_dir), "--layers", "0-3",
                           "--sites", "mlp.hook_pre,mlp.hook_post", "--quiet"], capsys)
    assert code == 0, err
    atlas = load_atlas(out_dir, model="smollm2-135m")
    assert len(atlas.sites) == 8 and atlas.method == "activation-statistics"
    freq = atlas.get("blocks.0.mlp.hook_pre", "frequency")
    assert freq.shape == (4, 1536)  # four language groups in the demo corpus
    assert torch.all((freq >= 0) & (freq <= 1))
    counts, tokens = atlas.get("blocks.0.mlp.hook_pre", "counts"), atlas.get("blocks.0.mlp.hook_pre", "tokens")
    torch.testing.assert_close(freq, (counts.double() / tokens.unsqueeze(1)).float())
    html = (out_dir / "report.html").read_text()
    assert "<mark>" in html and "blocks.3.mlp.hook_post" in html
    # every exemplar document is stored, and the highlighted token is in it
    doc = atlas.get("blocks.1.mlp.hook_post", "topk_doc")[0, 0]
    assert atlas.document(int(doc))["text"]
    header = json.loads((out_dir / "atlas.json").read_text())
    auto = str(interp.auto_dtype("cpu")).removeprefix("torch.")  # --dtype auto: bf16 only where it is native
    assert header["params"]["corpus"] == "demo" and header["params"]["dtype"] == auto
    assert header["params"]["dtype_requested"] == "auto" and out.startswith(f"# dtype {auto} (auto:")


BAD = [
    (["analyze", "--model", "no-such-model", "--corpus", "demo"], "unknown model"),
    (["analyze", "--model", "meta-llama/Llama-3.1-8B", "--corpus", "demo"], "hub is offline"),
    (["analyze", "--corpus", "demo", "--sites", "blocks.0.mlp.hook_nope"], "unknown site"),
    (["analyze", "--corpus", "demo", "--layers", "0-40"], "out of range"),
    (["analyze", "--corpus", "{empty}"], "empty"),
    (["analyze", "--corpus", "{binary}"], "UTF-8"),
    (["analyze", "--corpus", "{missing}"], "existing file"),
    (["analyze", "--corpus", "{dir}"], "directory"),
    (["analyze", "--corpus", "demo", "--dtype", "int3"], "invalid choice"),
    (["sites", "--model", "no/such/thing"], "unknown model"),
]
SUBPROCESS = {"hub is offline", "invalid choice"}  # run through a real `python -m cli.main`


@pytest.mark.parametrize("argv,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, needle, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "binary.txt").write_bytes(b"hello \xff\xfe world")
    (tmp_path / "adir").mkdir()
    paths = {"{empty}": tmp_path / "empty.txt", "{binary}": tmp_path / "binary.txt",
             "{missing}": tmp_path / "missing.txt", "{dir}": tmp_path / "adir"}
    argv = [str(paths.get(a, a)) for a in argv]
    out_dir = tmp_path / "out"
    if argv[0] == "analyze":
        argv += ["--out", str(out_dir)]
    code, _, err = run_cli(argv, capsys, real=needle in SUBPROCESS)
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert needle.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists()


def test_help_on_every_command(capsys):
    proc = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: interp" in proc.stdout  # the real entry point, once
    for argv in (["models", "--help"], ["sites", "--help"], ["analyze", "--help"]):
        code, out, _ = _run(argv, capsys)
        assert code == 0 and "usage: interp" in out
