"""MEG brain atlas (issue 8): planted word-property axes are recovered from simulated MEG, noise gives none,
FIF files round-trip through the builder, the atlas saves and loads, bad input gets clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from atlases.brain import BrainAtlasError, BrainAtlasSettings, build_brain_atlas, load_brain_atlas, read_raw
from atlases.meg_sim import simulate_meg, story_words
from atlases.words import Words, WordsError, lexicon, read_words, write_words


@pytest.fixture(scope="module")
def story():
    words = story_words(3000)
    return words, {"frequency": lexicon(words, "frequency"), "function": lexicon(words, "function")}


def _best(atlas, lexicon_name):
    """Largest |r| of a recovered axis with a lexicon."""
    r = np.abs(np.array(atlas.validation[lexicon_name]))[atlas.recovered]
    return float(r.max()) if r.size else 0.0


@pytest.mark.slow
def test_ica_recovers_both_planted_axes_from_simulated_meg(story) -> None:
    words, effects = story
    raw, w, _ = simulate_meg(words, effects, seed=0)
    atlas = build_brain_atlas([raw], {None: w}, BrainAtlasSettings(n_perm=50))
    print("\n" + atlas.table())
    assert atlas.recovered.sum() >= 2
    assert _best(atlas, "frequency") >= 0.8 and _best(atlas, "function") >= 0.8
    # dropping a planted family loses its axis; the other axes stay
    assert min(atlas.stability["function"]) < 0.5 < max(atlas.stability["function"])


@pytest.mark.slow
def test_noise_only_meg_recovers_nothing_above_the_permutation_threshold(story) -> None:
    words, _ = story
    raw, w, _ = simulate_meg(words, {}, seed=5)
    atlas = build_brain_atlas([raw], {None: w}, BrainAtlasSettings(n_perm=30), stability=False)
    print("\n" + atlas.table())
    assert not atlas.kept.any() and atlas.n_axes == 0 and not atlas.recovered.any()
    # the paper's ICA over every PC finds the word features in noise just as well: only reliability tells
    # `interp analyze --probe brain-axes --paper`, less the model-computed embedding-change feature
    settings = BrainAtlasSettings.paper(n_perm=30, embedding_change=False)
    assert settings.provenance()["choices"] == {"word_vector": "windows", "min_count": 1, "subspace": "all",
                                                "embedding_change": False}
    paper = build_brain_atlas([raw], {None: w}, settings, stability=False)
    assert max(np.abs(paper.validation["frequency"])) > 0.6 and not paper.recovered.any()


@pytest.mark.slow
def test_fif_and_words_tsv_round_trip_through_the_builder_and_the_atlas(tmp_path, story) -> None:
    words, effects = story
    raw, w, _ = simulate_meg(words[:900], {k: v[:900] for k, v in effects.items()}, seed=3)
    raw.save(tmp_path / "sub-01_raw.fif", verbose="error")
    write_words(tmp_path / "words.tsv", w)
    back = read_words(tmp_path / "words.tsv")[None]
    assert back.words == w.words and np.allclose(back.onsets, w.onsets, atol=1e-4)
    settings = BrainAtlasSettings(n_perm=10)
    from_file = build_brain_atlas([read_raw(tmp_path / "sub-01_raw.fif")], {None: back}, settings, stability=False)
    in_memory = build_brain_atlas([raw], {None: w}, settings, stability=False)
    assert from_file.words == in_memory.words and from_file.n_axes == in_memory.n_axes >= 1
    np.testing.assert_allclose(np.abs(from_file.scores), np.abs(in_memory.scores), atol=1e-3)
    from_file.save(tmp_path / "atlas")
    loaded = load_brain_atlas(tmp_path / "atlas")
    assert loaded.words == from_file.words and loaded.settings == from_file.settings
    np.testing.assert_allclose(loaded.scores, from_file.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loaded.recovered, from_file.recovered)
    assert loaded.validation == from_file.validation


def test_bad_meg_input_gets_clear_errors(tmp_path, story) -> None:
    import mne

    words, _ = story
    raw, w, _ = simulate_meg(words[:200], {}, seed=1)
    mags = mne.io.RawArray(raw.get_data(), mne.create_info(raw.ch_names, raw.info["sfreq"], "mag"), verbose="error")
    with pytest.raises(BrainAtlasError, match="0 good gradiometer"):
        build_brain_atlas([mags], {None: w})
    late = Words(w.onsets + 1e4, w.words)
    with pytest.raises(BrainAtlasError, match="outside the recording"):
        build_brain_atlas([raw], {None: late})
    with pytest.raises(BrainAtlasError, match="does not exist"):
        read_raw(tmp_path / "missing_raw.fif")
    (tmp_path / "junk_raw.fif").write_bytes(b"not a fif")
    with pytest.raises(BrainAtlasError, match="MNE cannot read"):
        read_raw(tmp_path / "junk_raw.fif")
    (tmp_path / "w.tsv").write_text("time\tword\n0.5\tthe\n")
    with pytest.raises(WordsError, match="onset and word"):
        read_words(tmp_path / "w.tsv")
    (tmp_path / "w.tsv").write_text("onset\tword\nsoon\tthe\n1.0\tking\n")
    with pytest.raises(WordsError, match="must be numbers"):
        read_words(tmp_path / "w.tsv")


def test_the_embedding_change_feature_is_required_when_on_and_enters_as_its_own_family() -> None:
    from atlases.words import EMBEDDING_CHANGE, with_feature, word_features

    words = story_words(300)
    raw, w, _ = simulate_meg(words, {}, seed=1)
    with pytest.raises(BrainAtlasError, match="no embedding_change column"):
        build_brain_atlas([raw], {None: w}, BrainAtlasSettings.paper(n_perm=10), stability=False)
    step = np.random.default_rng(0).uniform(1, 2, len(w.words))
    w2 = with_feature(w, EMBEDDING_CHANGE, step)
    feats, names = word_features(w2)
    assert names[-1] == EMBEDDING_CHANGE and np.allclose(feats[:, -1], step)
    assert with_feature(w2, EMBEDDING_CHANGE, 2 * step).user_names == [EMBEDDING_CHANGE]  # replaced, not doubled
