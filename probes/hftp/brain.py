"""The brain side of HFTP (An et al. 2025; METHODS.md §E step 5), with MNE.

- `read_epochs`: any file MNE reads as epochs (.fif), or a BIDS dataset folder read with
  mne-bids and epoched at its events; the six conditions are event names (Sentence,
  Phrase, Random × 2 blocks by default, each a setting).
- `itpc_spectra`: inter-trial phase coherence per channel and frequency for one condition:
  |mean over trials of X(f) / |X(f)||, X the rFFT of each trial (mne.time_frequency's
  CSD/TFR tools are time-resolved; the paper's measure is over the whole trial).
- `brain_rdms`, `model_rdm`: 6 × 6 cosine-distance RDMs between conditions — per channel
  from its ITPC spectrum in 0.5–2 Hz, for the model from the selected neurons' amplitude
  spectra in 0.5–2 Hz (each unit centred across conditions by default; `center=False` is
  the paper's raw distance);
- `rsa`: Spearman correlation of the off-diagonal entries (scipy), per channel; per-region
  means when channels carry region labels; the random-neuron control (same count).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from interp.errors import InterpError

CONDITIONS = ("Sentence/1", "Phrase/1", "Random/1", "Sentence/2", "Phrase/2", "Random/2")
BAND = (0.5, 2.0)  # Hz


class EpochsError(InterpError):
    """An epochs file that MNE cannot read, or that lacks the conditions HFTP needs."""


def read_epochs(path: str | Path, conditions: Sequence[str] = CONDITIONS,
                bids: Mapping[str, str] | None = None):
    """Epochs from a .fif file (or anything `mne.read_epochs` reads), or from a BIDS dataset folder
    (`read_bids_epochs`, `bids` picking the recording), checked for every condition."""
    import mne

    path = Path(path)
    if not path.exists():
        raise EpochsError(f"{path} does not exist")
    if path.is_dir():
        return read_bids_epochs(path, conditions, bids)
    if bids:
        raise EpochsError(f"{path} is a file; BIDS entities go with a BIDS dataset folder")
    try:
        epochs = mne.read_epochs(path, preload=True, verbose="error")
    except Exception as exc:  # MNE raises many kinds; one line for the user
        raise EpochsError(f"{path}: MNE cannot read it as epochs ({type(exc).__name__}: {exc})") from None
    check_conditions(epochs, conditions)
    return epochs


BIDS_SUFFIXES = ("meg", "eeg", "ieeg")
BIDS_ENTITIES = ("subject", "session", "task", "acquisition", "run")


def read_bids_epochs(root: str | Path, conditions: Sequence[str] = CONDITIONS,
                     entities: Mapping[str, str] | None = None, tmax: float | None = None):
    """Epochs from one MEG/EEG/iEEG recording of a BIDS dataset, read with mne-bids.

    The recording's events (events.tsv `trial_type`) name the conditions; each epoch starts at
    its event and spans the events' shortest duration (or `tmax` seconds). `entities`
    ({"subject": "01", "task": "hftp", ...}) pick the recording when the dataset has several.
    """
    try:
        import mne
        import mne_bids
    except ImportError:
        raise EpochsError("reading a BIDS folder needs mne-bids: pip install 'interp[brain]'") from None
    entities = dict(entities or {})
    unknown = set(entities) - set(BIDS_ENTITIES)
    if unknown:
        raise EpochsError(f"unknown BIDS entit{'ies' if len(unknown) > 1 else 'y'} {', '.join(sorted(unknown))}; "
                          f"use {', '.join(BIDS_ENTITIES)}")
    query = {f"{k}s": [v] for k, v in entities.items()}
    try:
        found = mne_bids.find_matching_paths(Path(root), suffixes=list(BIDS_SUFFIXES), ignore_json=True,
                                             ignore_nosub=True, **query)
    except Exception as exc:
        raise EpochsError(f"{root}: not a BIDS dataset mne-bids can search ({type(exc).__name__}: {exc})") from None
    found = [f for f in found if f.extension and f.extension not in (".tsv", ".json")]
    if not found:
        raise EpochsError(f"{root}: no MEG/EEG/iEEG recording matches {entities or 'anything'}")
    if len(found) > 1:
        names = ", ".join(f.basename for f in found[:4])
        raise EpochsError(f"{root}: {len(found)} recordings match ({names}…); pick one with subject=, task=, run=")
    try:
        raw = mne_bids.read_raw_bids(found[0], verbose="error")
    except Exception as exc:
        raise EpochsError(f"{found[0].basename}: mne-bids cannot read it ({type(exc).__name__}: {exc})") from None
    ann = raw.annotations
    present = [c for c in conditions if c in set(ann.description)]
    if not present:
        raise EpochsError(f"{found[0].basename}: its events name none of the conditions {', '.join(conditions)}; "
                          f"they have {', '.join(sorted(set(ann.description))) or 'no events'}")
    if tmax is None:
        durations = [d for d, name in zip(ann.duration, ann.description) if name in present]
        if min(durations) <= 0:
            raise EpochsError(f"{found[0].basename}: the condition events have no duration; pass the trial length")
        tmax = float(min(durations))
    events, event_id = mne.events_from_annotations(raw, event_id={c: i + 1 for i, c in enumerate(present)},
                                                   verbose="error")
    epochs = mne.Epochs(raw, events, event_id, tmin=0.0, tmax=tmax - 1.0 / raw.info["sfreq"], baseline=None,
                        preload=True, reject_by_annotation=False, verbose="error")
    check_conditions(epochs, conditions)
    return epochs


def check_conditions(epochs, conditions: Sequence[str]) -> None:
    have = set(epochs.event_id)
    missing = [c for c in conditions if c not in have]
    if missing:
        raise EpochsError(f"the epochs lack condition(s) {', '.join(missing)}; they have {', '.join(sorted(have))}")
    for c in conditions:
        if len(epochs[c]) < 2:
            raise EpochsError(f"condition {c!r} has {len(epochs[c])} epoch(s); phase coherence needs at least 2")


def itpc_spectra(data: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """ITPC [n_channels, n_freqs] of trials [n_trials, n_channels, n_times], and the frequencies (Hz)."""
    if data.ndim != 3 or data.shape[0] < 2:
        raise EpochsError(f"need trials × channels × times with ≥ 2 trials, got shape {data.shape}")
    X = np.fft.rfft(data, axis=-1)
    unit = X / np.maximum(np.abs(X), 1e-30)
    return np.abs(unit.mean(0)), np.fft.rfftfreq(data.shape[-1], d=1.0 / sfreq)


def _band(freqs: np.ndarray, band=BAND) -> np.ndarray:
    keep = (freqs >= band[0] - 1e-9) & (freqs <= band[1] + 1e-9)
    if not keep.any():
        raise EpochsError(f"no frequency bin in {band[0]}–{band[1]} Hz")
    return keep


def _cosine_rdm(features: np.ndarray, center: bool = True) -> np.ndarray:
    """[n_conditions, n_features] → 1 − cosine similarity [n_conditions, n_conditions].

    center: subtract each feature's mean over conditions first. Raw amplitude / ITPC spectra
    share a large positive baseline that makes every pair of conditions similar and lets a
    few strong units set the ranks; centring keeps only what differs between conditions
    (center=False: the paper's raw cosine distance)."""
    if center:
        features = features - features.mean(0, keepdims=True)
    norm = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-30)
    return 1.0 - norm @ norm.T


def brain_rdms(epochs, conditions: Sequence[str] = CONDITIONS, band=BAND,
               center: bool = True) -> tuple[np.ndarray, list[str]]:
    """One RDM per channel [n_channels, C, C] from ITPC spectra in `band`, and the channel names."""
    check_conditions(epochs, conditions)
    sfreq = epochs.info["sfreq"]
    spectra = []
    for c in conditions:
        itpc, freqs = itpc_spectra(epochs[c].get_data(copy=True), sfreq)
        spectra.append(itpc[:, _band(freqs, band)])  # [n_channels, F]
    s = np.stack(spectra, axis=1)  # [n_channels, C, F]
    return np.stack([_cosine_rdm(ch, center) for ch in s]), list(epochs.ch_names)


def model_rdm(spectra: Sequence[np.ndarray], freqs: np.ndarray, band=BAND, center: bool = True) -> np.ndarray:
    """RDM [C, C] from each condition's amplitude spectra [F, n_neurons] of the chosen neurons.

    With `center`, each neuron's block is also scaled to unit spread over conditions × frequencies,
    so that a few neurons with huge activations (the attention-sink ones) do not set the RDM alone."""
    x = np.stack([np.asarray(s)[_band(freqs, band)] for s in spectra])  # [C, F, N]
    if center:
        x = x - x.mean(0, keepdims=True)
        x = x / np.maximum(x.std(axis=(0, 1), keepdims=True), 1e-30)
    return _cosine_rdm(x.reshape(x.shape[0], -1), center=False)


def _off_diagonal(rdm: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(rdm.shape[-1], k=1)
    return rdm[..., i, j]


def rsa(model: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Spearman ρ between the model RDM [C, C] and each brain RDM [n, C, C] → [n]."""
    from scipy.stats import spearmanr

    m = _off_diagonal(model)
    return np.array([spearmanr(m, b).statistic for b in _off_diagonal(brain)])


@dataclass
class RsaResult:
    """ρ per channel for the selected (syntax) neurons and for two random-neuron controls.

    control: random sets of the same count drawn from all neurons (the paper's control).
    control_non_syntax: drawn from the neurons that passed neither rate (None without the
    labels). When most of a model's neurons carry the rhythm (smollm2: ~90 %), random
    neurons are mostly syntax neurons and the paper's control cannot separate them; the
    non-syntax draw asks the question the control is for: is it these neurons?"""

    channels: list[str]
    rho: np.ndarray  # [n_channels], selected neurons
    control: np.ndarray  # [n_controls, n_channels], random neurons of the same count
    model_rdm: np.ndarray  # [C, C], selected neurons
    brain_rdm: np.ndarray  # [C, C], mean over channels
    regions: dict[str, list[str]] | None = None
    control_non_syntax: np.ndarray | None = None  # [n_controls, n_channels]

    def by_region(self) -> dict[str, dict[str, float]]:
        """{region: {"rho", "control", "p", "non_syntax", "p_non_syntax"}}: mean ρ over the region's channels,
        the controls' mean, and the permutation p = (1 + #controls ≥ ρ) / (1 + n_controls)
        (one region "all" without labels; NaN where a control is absent)."""
        groups = self.regions or {"all": self.channels}
        idx = {c: i for i, c in enumerate(self.channels)}
        out = {}
        for region, chans in groups.items():
            ii = [idx[c] for c in chans]
            rho = float(np.nanmean(self.rho[ii]))
            row = {"rho": rho}
            for key, ctl in (("control", self.control), ("non_syntax", self.control_non_syntax)):
                means = np.nanmean(ctl[:, ii], axis=1) if ctl is not None else np.array([np.nan])
                row[key] = float(np.nanmean(means))
                p_key = "p" if key == "control" else "p_non_syntax"
                row[p_key] = float((1 + np.sum(means >= rho)) / (1 + means.size)) if ctl is not None else float("nan")
            out[region] = row
        return out

    def table(self) -> str:
        rows = [f"{'region':16s} {'rho':>7s} {'random':>7s} {'p':>6s} {'non-syntax':>10s} {'p':>6s}"]
        rows += [f"{r:16s} {v['rho']:7.3f} {v['control']:7.3f} {v['p']:6.3f} {v['non_syntax']:10.3f} "
                 f"{v['p_non_syntax']:6.3f}" for r, v in self.by_region().items()]
        return "\n".join(rows)


def model_brain_rsa(model_spectra: Sequence[np.ndarray], freqs: np.ndarray, selected: np.ndarray, epochs, *,
                    significant: np.ndarray | None = None, conditions: Sequence[str] = CONDITIONS,
                    regions: Mapping[str, Sequence[str]] | None = None, n_controls: int = 20, seed: int = 0,
                    band=BAND, center: bool = True) -> RsaResult:
    """RSA of the selected neurons (bool [n_neurons]) and of `n_controls` random sets of the same size
    from all neurons, and (given `significant`, bool [n_neurons]: the neurons that passed any rate)
    from the non-significant ones.

    model_spectra: per condition, amplitude spectra [F, n_neurons] (same order as `conditions`).
    """
    if len(model_spectra) != len(conditions):
        raise InterpError(f"need one model spectrum per condition ({len(conditions)}), got {len(model_spectra)}")
    selected = np.asarray(selected, dtype=bool)
    if not selected.any():
        raise InterpError("no neurons selected for RSA")
    if regions is not None:
        check_regions(epochs, regions)
        regions = {r: list(c) for r, c in regions.items()}
    brain, channels = brain_rdms(epochs, conditions, band, center)
    score = lambda mask: rsa(model_rdm([s[:, mask] for s in model_spectra], freqs, band, center), brain)  # noqa: E731
    rng = np.random.default_rng(seed)
    k = int(selected.sum())

    def controls(pool: np.ndarray) -> np.ndarray:
        draws = [rng.choice(pool, size=min(k, pool.size), replace=False) for _ in range(n_controls)]
        return np.stack([score(idx) for idx in draws])

    control, non_syntax = controls(np.arange(selected.size)), None
    if significant is not None:
        pool = np.flatnonzero(~np.asarray(significant, dtype=bool))
        non_syntax = controls(pool) if pool.size else None
    chosen = model_rdm([s[:, selected] for s in model_spectra], freqs, band, center)
    return RsaResult(channels, rsa(chosen, brain), control, chosen, np.nanmean(brain, 0), regions, non_syntax)


def check_regions(epochs, regions: Mapping[str, Sequence[str]]) -> None:
    """Region labels must name channels the epochs have."""
    unknown = [c for chans in regions.values() for c in chans if c not in epochs.ch_names]
    if unknown:
        raise EpochsError(f"region labels name channels the epochs lack: {', '.join(unknown[:5])}")
