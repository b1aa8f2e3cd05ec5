"""`interp analyze --probe milan`: descriptions in the atlas and its report, resume, bad input exits 2."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from atlases import load_atlas
from cli.main import build_parser, main
from cli.milan import _describer, milan_settings
from probes.milan.describe import describer_identity

SMALL = ["--probe", "milan", "--corpus", "demo", "--limit", "24", "--layers", "3", "--beam", "4",
         "--max-tokens", "6", "--top-k", "5"]


@pytest.mark.parametrize("bad", [["--lam", "-1"], ["--units", "x,y"], ["--units", "0"], ["--quantile", "1.5"],
                                 ["--search", " "], ["--beam", "0"]])
def test_bad_milan_options_exit_2_with_one_line(bad, tmp_path, capsys) -> None:
    assert main(["analyze", *SMALL, "--out", str(tmp_path / "m"), *bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and bad[0] in err, err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_analyze_milan_writes_descriptions_report_and_resumes(smollm2, small_captioner, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    site = "blocks.3.mlp.hook_post"
    # a checkpoint as an interrupted run leaves it: one neuron already described
    done = {"text": "from the checkpoint", "pmi": 0.0, "lam": 0.2, "mode": "rerank", "argmax": "x",
            "candidates": ["from the checkpoint"], "captioner": [0.0], "prior": [0.0]}
    ckpt = tmp_path / ".m.milan-checkpoint.json"
    argv = ["analyze", *SMALL, "--units", "10,20,30", "--resume", "--search", "numbers",
            "--describer", str(small_captioner), "--out", str(out), "--quiet"]
    args = build_parser().parse_args(argv)  # the settings and describer this run will use, as it records them
    settings = milan_settings(args)
    describer, _ = _describer(args, smollm2, settings)
    ckpt.write_text(json.dumps({"settings": asdict(settings), "describer": describer_identity(describer),
                                "descriptions": {site: {"10": done}}}))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    atlas = load_atlas(out, model=smollm2.name)
    d = atlas.params["descriptions"][site]
    assert set(d) == {"10", "20", "30"} and d["10"]["text"] == "from the checkpoint"  # resumed, not redone
    assert all(d[u]["text"] for u in ("20", "30"))
    assert atlas.get(site, "threshold").shape == (smollm2.adapter.d_mlp,)
    assert atlas.get(site, "topk.doc").shape == (smollm2.adapter.d_mlp, 5)
    full = json.loads((out / "milan.json").read_text())
    assert len(full[site]["20"]["candidates"]) == len(full[site]["20"]["captioner"]) >= 1
    report = (out / "report.html").read_text()
    assert "<mark>" in report and d["20"]["text"] in report.replace("&#x27;", "'")
    assert not ckpt.exists()  # a finished run removes its checkpoint
    assert f"{site}:" in printed  # the --search hits


def test_resume_refuses_a_checkpoint_written_with_other_settings(tmp_path, capsys, monkeypatch) -> None:
    """Refused before any model work: no model loaded, no exemplar pass, no captioner trained (that took
    ~3 min on a cold cache before the refusal)."""
    import cli.milan

    def reached(*args, **kwargs):
        raise AssertionError("the model was loaded before the checkpoint was refused")

    monkeypatch.setattr(cli.milan, "load", reached)
    ckpt = tmp_path / ".m.milan-checkpoint.json"
    ckpt.write_text(json.dumps({"settings": {"k": 99}, "descriptions": {}}))
    assert main(["analyze", *SMALL, "--units", "10", "--resume", "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "other MILAN settings" in capsys.readouterr().err and not (tmp_path / "m").exists()
