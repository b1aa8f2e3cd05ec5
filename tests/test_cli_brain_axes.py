"""`interp analyze --probe brain-axes` and `interp steer brain-axis` end to end; bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main


@pytest.fixture(scope="module")
def meg(tmp_path_factory):
    """Simulated MEG (frequency and function planted) as a BIDS dataset, and its words file."""
    import mne
    import mne_bids

    from atlases.meg_sim import simulate_meg, story_words
    from atlases.words import lexicon, write_words

    root = tmp_path_factory.mktemp("meg")
    words = story_words(3000)
    raw, w, _ = simulate_meg(words, {"frequency": lexicon(words, "frequency"),
                                     "function": lexicon(words, "function")}, seed=0)
    raw.save(root / "sim_raw.fif", verbose="error")
    mne_bids.write_raw_bids(mne.io.read_raw_fif(root / "sim_raw.fif", verbose="error"),
                            mne_bids.BIDSPath(subject="01", task="story", root=root / "bids"), verbose="error")
    write_words(root / "words.tsv", w)
    return root


@pytest.mark.slow
def test_analyze_and_steer_along_a_brain_axis(smollm2, meg, tmp_path, capsys) -> None:
    from atlases import load_atlas
    from atlases.brain import load_brain_atlas

    out = tmp_path / "axes"
    assert main(["analyze", "--probe", "brain-axes", "--meg", str(meg / "bids"), "--words", str(meg / "words.tsv"),
                 "--brain-permutations", "20", "--layers", "15", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    atlas = load_brain_atlas(out)
    assert atlas.recovered.sum() >= 2 and "adapters" in printed
    info = load_atlas(out).params["adapters"]
    assert info["model"] == smollm2.name and list(info["layers"]) == ["15"]
    params = load_atlas(out).params
    assert params["paper_mode"]["paper"] is False and "embedding_change" not in params["feature_names"]
    assert (out / "axes.png").read_bytes().startswith(b"\x89PNG") and "axes.png" in (out / "report.html").read_text()
    k = int(np.argmax(np.abs(np.array(atlas.validation["frequency"])) * atlas.recovered))
    assert main(["steer", "brain-axis", "--atlas", str(out), "--axis", str(k), "--strength", "2",
                 "--prompt", "Once upon a time, a girl", "--compare", "--max-new-tokens", "20"]) == 0
    printed = capsys.readouterr().out
    assert f"brain axis {k} at layer 15" in printed and "steered" in printed
    rows = [line.split(" | ") for line in printed.splitlines() if " | " in line][2:]
    assert any(a.strip() != b.strip() for a, b in rows)  # the steered text differs from the unsteered one


@pytest.mark.parametrize("extra, message", [
    (["analyze", "--probe", "brain-axes"], "needs --meg DIR and --words"),
    (["analyze", "--probe", "brain-axes", "--meg", "nowhere", "--words", "w.tsv"], "--meg nowhere does not exist"),
    (["steer", "--prompt", "x", "--axis", "1"], "--axis goes with interp steer brain-axis"),
    (["steer", "brain-axis", "--prompt", "x", "--atlas", "a"], "needs --axis"),
    (["steer", "brain-axis", "--prompt", "x", "--axis", "0", "--atlas", "a", "--strength", "big"],
     "must be a number"),
])
def test_bad_brain_axes_input_is_one_line_and_exit_2(extra, message, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "atlas.json").write_text(json.dumps({}))
    args = extra + (["--out", "out"] if extra[0] == "analyze" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_meg_without_gradiometers_fails_with_one_line(tmp_path, capsys) -> None:
    import mne

    from atlases.meg_sim import simulate_meg, story_words
    from atlases.words import write_words

    raw, w, _ = simulate_meg(story_words(200), {}, seed=1)
    mags = mne.io.RawArray(raw.get_data(), mne.create_info(raw.ch_names, raw.info["sfreq"], "mag"), verbose="error")
    mags.save(tmp_path / "mag_raw.fif", verbose="error")
    write_words(tmp_path / "words.tsv", w)
    assert main(["analyze", "--probe", "brain-axes", "--meg", str(tmp_path / "mag_raw.fif"), "--words",
                 str(tmp_path / "words.tsv"), "--out", str(tmp_path / "out")]) == 2
    assert "gradiometer" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_analyze_brain_axes_paper_run_adds_the_model_embedding_change_and_records_paper_mode(smollm2, meg,
                                                                                           tmp_path) -> None:
    from atlases import load_atlas

    common = ["analyze", "--probe", "brain-axes", "--meg", str(meg / "bids"), "--words", str(meg / "words.tsv"),
              "--brain-permutations", "10", "--layers", "29", "--quiet"]
    assert main(common + ["--paper", "--out", str(tmp_path / "paper")]) == 0
    paper = load_atlas(tmp_path / "paper").params
    assert paper["paper_mode"] == {"paper": True, "choices": {"word_vector": "windows", "min_count": 1,
                                                              "subspace": "all", "embedding_change": True}}
    assert paper["embedding_change_model"] == smollm2.name
    # the default run (test_analyze_and_steer_along_a_brain_axis, same recordings) has no such feature
    assert "embedding_change" in paper["feature_names"]
