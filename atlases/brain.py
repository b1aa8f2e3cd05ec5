"""The MEG brain atlas (Andric 2025; METHODS.md §G steps 1–3), with MNE and scikit-learn.

1. PLV states (`plv_states`): gradiometers, theta band (FIR band-pass + Hilbert, MNE),
   sliding windows (2.0 s stepped 0.5 s); per window the phase-locking value of every
   channel pair |mean_t exp(i(φ_a − φ_b))| (one complex product per window); the upper
   triangle, reduced by one PCA over all recordings (128 components) → states [W, P].
2. Word atlas (`build_brain_atlas`): a window's lag-ℓ word is the word being heard at
   the window's centre − ℓ (the last onset before it, at most `max_gap` s earlier); ridge
   (α = 200, standardised features) predicts the states from the features of the words at
   lags 0, 0.5, 1.0 s; a word's vector is the mean prediction over the windows where it is
   the lag-0 word, averaged over recordings — by default with the other lags' words held at
   their mean (`word_vector="own"`; "windows" is the paper's), since a rare word's few
   contexts otherwise enter its vector as strongly as the word itself, and only for words
   heard at least twice (`min_count`).
3. Axes: FastICA (20 components, random_state 0) over the word vectors → per-word axis
   scores; each axis is oriented so that its scores are positively skewed.

Where the brain comes in, which the paper leaves implicit: word vectors are ridge
predictions, so they are A·s with s the word's (and its contexts') features; FastICA
whitens them, which removes A, so ICA over all PCs (`subspace="all"`, the paper) returns
the same axes for any recording — pure noise included. By default (`subspace="reliable"`)
ICA runs only over the state PCs the recording supports: those whose held-out prediction
(time-blocked cross-validation within each recording) correlates with the measured state
beyond the `perm_quantile` of the best PC over `n_perm` rebuilds with the word timeline
circularly shifted against the recording. Noise supports no PC, so it yields no axis.
Each axis's held-out reliability (the same correlation along the axis) is reported too.

Validation: Pearson r of each axis with lexica (Zipf log frequency via `wordfreq`,
function/content, length, any user lexicon). Stability: rebuild without one feature
family and match axes (Hungarian on |r| of word scores) → matched |r| per axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from interp.errors import InterpError
from interp.paper import PaperSettings, differs

from .words import BUILT_IN, EMBEDDING_CHANGE, Words, WordsError, family, lexicon, word_features

METHOD = "brain-axes"
MODEL_ID = "meg"  # the atlas describes recordings, not a language model


class BrainAtlasError(InterpError):
    """MEG input the brain atlas cannot use (no gradiometers, words outside the recording, …)."""


@dataclass
class BrainAtlasSettings(PaperSettings):
    band: tuple[float, float] = (4.0, 7.0)  # Hz, theta
    window: float = 2.0  # s
    step: float = 0.5  # s
    plv_sfreq: float = 100.0  # Hz: phases are decimated to this rate before the PLV products
    n_pcs: int = 128
    lags: tuple[float, ...] = (0.0, 0.5, 1.0)  # s
    max_gap: float = 2.0  # s: a lag word must have started at most this long before its time
    ridge_alpha: float = 200.0
    n_axes: int = 20
    ica_seed: int = 0
    n_folds: int = 5
    n_perm: int = 100
    perm_quantile: float = 0.95
    word_vector: str = differs(  # "windows": the mean prediction over the word's lag-0 windows (the paper);
        "own", paper="windows", why="in the mean over windows a rare word's one or two contexts count as much as "
        "the word itself")
    # "own": the same with the other lags' words held at their mean, so the context does not enter the vector
    min_count: int = differs(  # words heard fewer times than this (over all recordings) get no vector
        2, paper=1, why="a word heard once has a vector made of one context")
    subspace: str = differs(  # ICA over the state dimensions the brain supports; "all": the paper (every PC)
        "reliable", paper="all", why="word vectors are linear in the word features and ICA's whitening undoes the "
        "map, so ICA over every PC finds the features in pure noise", effect="simulated MEG: pure noise gives "
        "axes with |r| > 0.6 to the word features over all PCs, none over the reliable ones")
    embedding_change: bool = differs(  # the model-computed word feature (atlases.words.embedding_change)
        False, paper=True, why="computed from a model's hidden states, it makes the atlas depend on that model, and "
        "the adapters fitted on the same model's hidden states then predict the axes it drives by construction",
        effect="not measured")
    families: tuple[str, ...] | None = None  # feature families (None: built-in + every user column)
    lang: str = "en"
    seed: int = 0


# --------------------------------------------------------------------------- reading MEG


def read_raw(path: str | Path):
    """One raw MEG recording MNE reads (FIF, or any `mne.io.read_raw` format), preloaded."""
    import mne

    path = Path(path)
    if not path.exists():
        raise BrainAtlasError(f"{path} does not exist")
    try:
        return mne.io.read_raw(path, preload=True, verbose="error")
    except Exception as exc:  # MNE raises many kinds
        raise BrainAtlasError(f"{path}: MNE cannot read it as a raw recording ({type(exc).__name__}: {exc})") from None


def find_recordings(folder: str | Path) -> list[Path]:
    """The raw recordings in a folder: a BIDS dataset's MEG runs (mne-bids), else its *.fif files."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise BrainAtlasError(f"{folder} does not exist")
    if (folder / "dataset_description.json").is_file():
        try:
            import mne_bids
        except ImportError:
            raise BrainAtlasError("reading a BIDS folder needs mne-bids: pip install 'interp[brain]'") from None
        found = mne_bids.find_matching_paths(folder, suffixes="meg", ignore_json=True, ignore_nosub=True)
        paths = sorted({Path(p.fpath) for p in found if p.extension not in (".tsv", ".json")})
    else:
        paths = sorted(p for p in folder.rglob("*.fif") if not p.name.endswith("-epo.fif"))
    if not paths:
        raise BrainAtlasError(f"{folder}: no raw MEG recording (.fif, or a BIDS dataset) found")
    return paths


def gradiometers(raw):
    """A copy of `raw` with only its gradiometers (good ones)."""
    import mne

    picks = mne.pick_types(raw.info, meg="grad", exclude="bads")
    if len(picks) < 2:
        kinds = sorted(set(raw.get_channel_types()))
        raise BrainAtlasError(f"the recording has {len(picks)} good gradiometer(s) (channel types: "
                              f"{', '.join(kinds)}); PLV states need at least two")
    return raw.copy().pick(picks)


# --------------------------------------------------------------------------- 1. PLV states


def plv_matrix(raw, settings: BrainAtlasSettings) -> tuple[np.ndarray, np.ndarray]:
    """Channel-pair PLV per window [W, n_pairs] (upper triangle) and the window start times (s)."""
    grads = gradiometers(raw)
    lo, hi = settings.band
    if not 0 < lo < hi < grads.info["sfreq"] / 2:
        raise BrainAtlasError(f"band {lo}–{hi} Hz does not fit the sampling rate {grads.info['sfreq']} Hz")
    grads.filter(lo, hi, fir_design="firwin", verbose="error")
    grads.apply_hilbert(envelope=False, verbose="error")
    decim = max(1, int(round(grads.info["sfreq"] / settings.plv_sfreq)))
    z = grads.get_data()[:, ::decim]
    z = z / np.maximum(np.abs(z), 1e-30)  # unit phasors [C, T]
    sfreq = grads.info["sfreq"] / decim
    width, hop = int(round(settings.window * sfreq)), int(round(settings.step * sfreq))
    if z.shape[1] < width:
        raise BrainAtlasError(f"the recording ({z.shape[1] / sfreq:.1f} s) is shorter than one window "
                              f"({settings.window} s)")
    starts = np.arange(0, z.shape[1] - width + 1, hop)
    iu = np.triu_indices(z.shape[0], k=1)
    plv = np.empty((len(starts), iu[0].size), dtype=np.float32)
    for w, s in enumerate(starts):
        seg = z[:, s:s + width]
        plv[w] = np.abs(seg @ seg.conj().T)[iu] / width
    return plv, starts / sfreq


# --------------------------------------------------------------------------- 2. lagged word design


def lag_words(window_starts: np.ndarray, onsets: np.ndarray, settings: BrainAtlasSettings) -> np.ndarray:
    """Index of the word heard at each window's centre − ℓ, per lag: int [W, L], −1 where none."""
    centres = window_starts + settings.window / 2
    out = np.full((len(centres), len(settings.lags)), -1, dtype=int)
    for j, lag in enumerate(settings.lags):
        t = centres - lag
        idx = np.searchsorted(onsets, t, side="right") - 1
        ok = (idx >= 0) & (t - onsets[np.clip(idx, 0, None)] <= settings.max_gap)
        out[:, j] = np.where(ok, idx, -1)
    return out


def check_onsets(words: Words, duration: float, name: str) -> None:
    bad = (words.onsets < 0) | (words.onsets > duration)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BrainAtlasError(f"{name}: {int(bad.sum())} word onset(s) fall outside the recording "
                              f"(0–{duration:.1f} s), "
                              f"e.g. {words.words[i]!r} at {words.onsets[i]:.2f} s")


def design(features: np.ndarray, lag_idx: np.ndarray) -> np.ndarray:
    """Lagged features [W, L·F]: each lag's word features (0 = the mean, for a missing word)."""
    padded = np.vstack([features, np.zeros((1, features.shape[1]))])  # row −1: zeros
    return np.concatenate([padded[lag_idx[:, j]] for j in range(lag_idx.shape[1])], axis=1)


# --------------------------------------------------------------------------- 3. the atlas


@dataclass
class Recording:
    """What the atlas needs of one recording: PLV states, its lagged design and lag-0 words."""

    name: str
    plv: np.ndarray  # [W, n_pairs]
    lag_idx: np.ndarray  # [W, L]
    words: Words
    features: np.ndarray  # [n_words, F] standardised over all recordings


@dataclass
class BrainAtlas:
    """Word vectors, ICA axes and their checks. Arrays over the vocabulary `words` [V]."""

    words: list[str]
    feature_names: list[str]
    settings: BrainAtlasSettings
    pca_mean: np.ndarray  # [n_pairs]
    pca_components: np.ndarray  # [P, n_pairs]
    word_vectors: np.ndarray  # [V, P]
    unmixing: np.ndarray  # [K, P]: axis k's score of a word = (vector − vector_mean) @ unmixing[k]
    vector_mean: np.ndarray  # [P]
    scores: np.ndarray  # [V, K]
    reliability: np.ndarray  # [K] held-out correlation along each axis
    pc_reliability: np.ndarray  # [P] held-out correlation per state PC
    null_max: np.ndarray  # [n_perm] best PC's held-out correlation with the timeline shifted
    kept: np.ndarray  # bool [P]: the PCs the axes were built from
    validation: dict[str, list[float]] = field(default_factory=dict)  # lexicon → r per axis
    stability: dict[str, list[float]] = field(default_factory=dict)  # dropped family → matched |r| per axis
    n_windows: int = 0

    @property
    def threshold(self) -> float:
        return float(np.quantile(self.null_max, self.settings.perm_quantile)) if self.null_max.size else np.inf

    @property
    def recovered(self) -> np.ndarray:
        """bool [K]: axes whose held-out reliability beats the permutation threshold."""
        return self.reliability > self.threshold

    @property
    def n_axes(self) -> int:
        return self.scores.shape[1]

    def axis_scores(self) -> dict[str, np.ndarray]:
        """{word: scores [K]}."""
        return {w: self.scores[i] for i, w in enumerate(self.words)}

    def table(self) -> str:
        lex = list(self.validation)
        rows = [f"{'axis':>4s} {'reliab.':>8s} {'recov.':>6s} " + " ".join(f"{n[:10]:>10s}" for n in lex)
                + "".join(f" {'−' + d[:9]:>10s}" for d in self.stability)]
        for k in range(self.n_axes):
            rows.append(f"{k:4d} {self.reliability[k]:8.3f} {'yes' if self.recovered[k] else '':>6s} "
                        + " ".join(f"{self.validation[n][k]:10.3f}" for n in lex)
                        + "".join(f" {v[k]:10.3f}" for v in self.stability.values()))
        rows.append(f"permutation threshold (q={self.settings.perm_quantile}, {self.null_max.size} shifts): "
                    f"{self.threshold:.3f}; {int(self.kept.sum())} of {self.kept.size} state PCs above it "
                    f"(ICA over {'those' if self.settings.subspace == 'reliable' else 'all of them'}); "
                    f"{self.n_windows} windows, {len(self.words)} words")
        return "\n".join(rows)

    # ------------------------------------------------------------------ disk
    def to_atlas(self):
        from .neuron_atlas import Atlas

        arrays = {"pca_mean": self.pca_mean, "pca_components": self.pca_components, "word_vectors": self.word_vectors,
                  "unmixing": self.unmixing, "vector_mean": self.vector_mean, "scores": self.scores,
                  "reliability": self.reliability, "pc_reliability": self.pc_reliability, "null_max": self.null_max,
                  "kept": self.kept}
        tensors = {f"meg/{k}": torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()}
        params = {"settings": asdict(self.settings), "words": self.words, "feature_names": self.feature_names,
                  "validation": self.validation, "stability": self.stability, "n_windows": self.n_windows,
                  "recovered": self.recovered.tolist()}
        return Atlas(model=MODEL_ID, sites=["meg"], method=METHOD, tensors=tensors, params=params)

    def save(self, folder: str | Path, **kw) -> Path:
        return self.to_atlas().save(folder, **kw)


def load_brain_atlas(folder: str | Path) -> BrainAtlas:
    from .neuron_atlas import load_atlas

    atlas = load_atlas(folder)
    if atlas.method != METHOD:
        raise BrainAtlasError(f"{folder} is a {atlas.method!r} atlas, not a brain-axes atlas")
    p = atlas.params
    s = dict(p["settings"])
    s["band"], s["lags"] = tuple(s["band"]), tuple(s["lags"])
    s["families"] = tuple(s["families"]) if s.get("families") is not None else None
    arr = {k.split("/", 1)[1]: v.numpy().astype(np.float64) for k, v in atlas.tensors.items()
           if k.startswith("meg/")}  # (adapters, when present, are read by probes.brain_axes.load_adapter)
    arr["kept"] = arr["kept"] > 0.5
    return BrainAtlas(words=list(p["words"]), feature_names=list(p["feature_names"]),
                      settings=BrainAtlasSettings(**s), validation=p["validation"], stability=p["stability"],
                      n_windows=p["n_windows"], **arr)


# --------------------------------------------------------------------------- building


def prepare(raws: Sequence, words: Mapping[str | None, Words], settings: BrainAtlasSettings,
            names: Sequence[str] | None = None) -> tuple[list[Recording], list[str]]:
    """PLV per recording, lag words, and the standardised features of each recording's words."""
    names = list(names or [f"recording-{i}" for i in range(len(raws))])
    recs, feats = [], []
    for raw, name in zip(raws, names):
        w = words.get(name, words.get(None))
        if w is None:
            raise WordsError(f"the words file has no rows for recording {name!r} (and no shared rows)")
        check_onsets(w, raw.times[-1], name)
        if settings.embedding_change and EMBEDDING_CHANGE not in w.user_names:
            raise BrainAtlasError("embedding_change is on but the words have no embedding_change column: add it with "
                                  "atlases.words.add_embedding_change(model, words) (interp analyze --probe "
                                  "brain-axes --embedding-change does)")
        plv, starts = plv_matrix(raw, settings)
        f, fnames = word_features(w, settings.families, settings.lang)
        feats.append(f)
        recs.append(Recording(name, plv, lag_words(starts, w.onsets, settings), w, f))
    allf = np.vstack(feats)
    mu, sd = allf.mean(0), allf.std(0)
    sd[sd == 0] = 1.0
    for r in recs:
        r.features = (r.features - mu) / sd
    return recs, fnames


def _fit_predict(x_train, y_train, x_test, alpha):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x_train, y_train)
    return model.predict(x_test)


def _word_vectors(recs, states, designs, settings, vocab_index):
    """Mean ridge prediction over each word's lag-0 windows, averaged over recordings: [V, P]."""
    total = np.zeros((len(vocab_index), states[0].shape[1]))
    count = np.zeros(len(vocab_index))
    for r, y, x in zip(recs, states, designs):
        keep = r.lag_idx[:, 0] >= 0
        shown = x[keep].copy()
        if settings.word_vector == "own":
            shown[:, x.shape[1] // len(settings.lags):] = 0.0  # standardised features: 0 is the mean
        pred = _fit_predict(x[keep], y[keep], shown, settings.ridge_alpha)
        lag0 = r.lag_idx[keep, 0]
        per_rec = np.zeros_like(total)
        n = np.zeros(len(vocab_index))
        ids = np.array([vocab_index.get(_key(r.words.words[i]), -1) for i in lag0])
        pred, ids = pred[ids >= 0], ids[ids >= 0]
        np.add.at(per_rec, ids, pred)
        np.add.at(n, ids, 1)
        seen = n > 0
        total[seen] += per_rec[seen] / n[seen, None]
        count[seen] += 1
    return total / np.maximum(count, 1)[:, None], count > 0


def _key(word: str) -> str:
    from .words import normalise

    return normalise(word) or word


def _ica(vectors: np.ndarray, settings: BrainAtlasSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FastICA over word vectors [V, P] → (scores [V, K], unmixing [K, P], mean [P]); K ≤ the vectors' rank."""
    import warnings

    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    mean = vectors.mean(0)
    centred = vectors - mean
    sv = np.linalg.svd(centred, compute_uv=False)
    rank = int((sv > 1e-8 * sv[0]).sum()) if sv.size and sv[0] > 0 else 0
    k = min(settings.n_axes, rank, vectors.shape[0] - 1)
    if k < 1:
        raise BrainAtlasError("the word vectors have no variance to decompose")
    ica = FastICA(n_components=k, random_state=settings.ica_seed, whiten="unit-variance", max_iter=2000, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = ica.fit_transform(centred)
    unmixing = ica.components_.copy()
    skew = ((scores - scores.mean(0)) ** 3).mean(0)
    sign = np.where(skew < 0, -1.0, 1.0)
    return scores * sign, unmixing * sign[:, None], mean


def _held_out(states, designs, recs, settings) -> tuple[np.ndarray, np.ndarray]:
    """Measured and predicted states of held-out windows (time-blocked folds per recording): [N, P] each."""
    measured, predicted = [], []
    for r, y, x in zip(recs, states, designs):
        keep = np.flatnonzero(r.lag_idx[:, 0] >= 0)
        for test in np.array_split(keep, settings.n_folds):
            train = np.setdiff1d(keep, test)
            if len(train) < 2 or len(test) < 2:
                continue
            predicted.append(_fit_predict(x[train], y[train], x[test], settings.ridge_alpha))
            measured.append(y[test])
    if not measured:
        raise BrainAtlasError("too few windows with words for cross-validation")
    return np.vstack(measured), np.vstack(predicted)


def _predicted_components(states, designs, recs, settings) -> tuple[np.ndarray, np.ndarray]:
    """Directions of state space ordered by how much of the held-out prediction they carry (PCA of the
    cross-validated predictions) [P, P], and each direction's held-out correlation with the measured
    state [P]."""
    measured, predicted = _held_out(states, designs, recs, settings)
    centred = predicted - predicted.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt, _corr(measured @ vt.T, predicted @ vt.T)


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson r of [N, K] arrays: [K]."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.maximum(np.sqrt((a ** 2).sum(0) * (b ** 2).sum(0)), 1e-30)


def _designs(recs, columns=None):
    return [design(r.features if columns is None else r.features[:, columns], r.lag_idx) for r in recs]


def _axes(recs, states, settings, vocab_index, kept, columns=None):
    """Word vectors → ICA over the `kept` PCs → (vectors, scores, unmixing [K, P], mean, reliability [K])."""
    designs = _designs(recs, columns)
    vectors, _ = _word_vectors(recs, states, designs, settings, vocab_index)
    P = vectors.shape[1]
    if not kept.any():
        return vectors, np.zeros((len(vectors), 0)), np.zeros((0, P)), vectors.mean(0), np.zeros(0)
    scores, sub_unmixing, sub_mean = _ica(vectors[:, kept], settings)
    unmixing = np.zeros((sub_unmixing.shape[0], P))
    unmixing[:, kept] = sub_unmixing
    mean = vectors.mean(0)
    measured, predicted = _held_out(states, designs, recs, settings)
    return vectors, scores, unmixing, mean, _corr(measured @ unmixing.T, predicted @ unmixing.T)


def _shifted(recs, rng) -> list[Recording]:
    """The same recordings with the word timeline circularly shifted against the windows."""
    out = []
    for r in recs:
        n = len(r.lag_idx)
        shift = int(rng.integers(max(1, n // 5), max(2, n - n // 5)))
        out.append(Recording(r.name, r.plv, np.roll(r.lag_idx, shift, axis=0), r.words, r.features))
    return out


def match_axes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|r| of each column of a [V, K] with its Hungarian-matched column of b [V, K']: [K] (0 if unmatched)."""
    from scipy.optimize import linear_sum_assignment

    za = (a - a.mean(0)) / np.maximum(a.std(0), 1e-30)
    zb = (b - b.mean(0)) / np.maximum(b.std(0), 1e-30)
    r = np.abs(za.T @ zb) / a.shape[0]
    rows, cols = linear_sum_assignment(-r)
    out = np.zeros(a.shape[1])
    out[rows] = r[rows, cols]
    return out


def build_brain_atlas(raws: Sequence, words: Mapping[str | None, Words], settings: BrainAtlasSettings | None = None,
                      *, names: Sequence[str] | None = None, lexica: Mapping[str, Mapping[str, float]] | None = None,
                      stability: bool = True, progress: bool = False) -> BrainAtlas:
    """The atlas from raw recordings (MNE Raw objects) and their words ({recording name or None: Words}).

    lexica: extra {name: {word: value}} for validation (e.g. concreteness norms)."""
    from sklearn.decomposition import PCA
    from tqdm.auto import tqdm

    settings = settings or BrainAtlasSettings()
    if not raws:
        raise BrainAtlasError("no recordings")
    recs, fnames = prepare(raws, words, settings, names)
    if len({r.plv.shape[1] for r in recs}) > 1:
        raise BrainAtlasError("the recordings have different gradiometer sets; PLV states need the same sensors")
    stacked = np.vstack([r.plv for r in recs])
    pca = PCA(n_components=min(settings.n_pcs, stacked.shape[0] - 1, stacked.shape[1]),
              random_state=settings.seed).fit(stacked)
    states = [pca.transform(r.plv) for r in recs]
    from collections import Counter

    heard = Counter(_key(r.words.words[i]) for r in recs for i in r.lag_idx[:, 0] if i >= 0)
    vocab = sorted(w for w, n in heard.items() if n >= settings.min_count)
    if len(vocab) < 3:
        raise BrainAtlasError(f"only {len(vocab)} word(s) heard at least {settings.min_count} times")
    vocab_index = {w: i for i, w in enumerate(vocab)}
    if settings.subspace not in ("reliable", "all"):
        raise BrainAtlasError(f"subspace {settings.subspace!r}: use 'reliable' or 'all'")
    basis, pc_reliability = _predicted_components(states, _designs(recs), recs, settings)
    rng = np.random.default_rng(settings.seed)
    null = []
    for _ in tqdm(range(settings.n_perm), desc="timeline shifts", disable=not progress):
        shifted = _shifted(recs, rng)
        null.append(_predicted_components(states, _designs(shifted), shifted, settings)[1].max())
    null = np.array(null)
    threshold = np.quantile(null, settings.perm_quantile) if null.size else np.inf
    kept = pc_reliability > threshold if settings.subspace == "reliable" else np.ones(len(pc_reliability), bool)
    states = [y @ basis.T for y in states]  # state coordinates along the predicted components
    vectors, scores, unmixing, mean, reliability = _axes(recs, states, settings, vocab_index, kept)
    atlas = BrainAtlas(vocab, fnames, settings, pca.mean_, pca.components_, vectors, unmixing, mean, scores,
                       reliability, pc_reliability, null, kept, n_windows=sum(len(s) for s in states))
    atlas.validation = validate(atlas, {**_user_lexica(recs), **(lexica or {})})
    if stability:
        fams = sorted({family(n) for n in fnames})
        for fam in fams if len(fams) > 1 else []:
            cols = [j for j, n in enumerate(fnames) if family(n) != fam]
            other = _axes(recs, states, settings, vocab_index, kept, cols)[1]
            atlas.stability[fam] = match_axes(scores, other).tolist() if other.shape[1] else [0.0] * atlas.n_axes
    return atlas


def _user_lexica(recs: Sequence[Recording]) -> dict[str, dict[str, float]]:
    """The words file's own numeric columns as lexica: {column: {word: mean value}}."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in recs:
        for j, name in enumerate(r.words.user_names):
            for word, value in zip(r.words.words, r.words.user[:, j]):
                out.setdefault(name, {}).setdefault(_key(word), []).append(float(value))
    return {name: {w: float(np.mean(v)) for w, v in t.items()} for name, t in out.items()}


def validate(atlas: BrainAtlas, lexica: Mapping[str, Mapping[str, float]] | None = None,
             lang: str | None = None) -> dict[str, list[float]]:
    """Pearson r of each axis's word scores with the built-in lexica and any {name: {word: value}}."""
    lang = lang or atlas.settings.lang
    out = {}
    tables = {k: dict(zip(atlas.words, lexicon(atlas.words, k, lang))) for k in BUILT_IN}
    tables.update({k: {_key(w): float(v) for w, v in t.items()} for k, t in (lexica or {}).items()})
    for name, table in tables.items():
        idx = [i for i, w in enumerate(atlas.words) if w in table]
        if len(idx) < 3:
            continue
        v = np.array([table[atlas.words[i]] for i in idx])
        s = atlas.scores[idx]
        if v.std() == 0:
            continue
        zs = (s - s.mean(0)) / np.maximum(s.std(0), 1e-30)
        out[name] = ((zs * ((v - v.mean()) / v.std())[:, None]).mean(0)).tolist()
    return out


def read_lexicon(path: str | Path) -> dict[str, float]:
    """A user lexicon CSV/TSV with a header: the first column the word, the second a number."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise WordsError(f"lexicon {path} does not exist")
    text = path.read_text(encoding="utf-8")
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.reader(text.splitlines(), dialect=dialect))[1:]
    out = {}
    for i, row in enumerate(rows, start=2):
        try:
            out[row[0]] = float(row[1])
        except (IndexError, ValueError):
            raise WordsError(f"{path}:{i}: expected a word and a number") from None
    return out
