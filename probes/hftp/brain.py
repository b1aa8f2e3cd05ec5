"""The brain side of HFTP (An et al. 2025; METHODS.md §E step 5), with MNE.

- `read_epochs`: any file MNE reads as epochs (.fif; a BIDS recording is read with
  mne-bids and epoched by the user first); the six conditions are event names (Sentence,
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


def read_epochs(path: str | Path, conditions: Sequence[str] = CONDITIONS):
    """Epochs from a .fif file (or anything `mne.read_epochs` reads), checked for every condition."""
    import mne

    path = Path(path)
    if not path.exists():
        raise EpochsError(f"{path} does not exist")
    if path.is_dir():
        raise EpochsError(f"{path} is a folder: for a BIDS dataset, read the recording with mne-bids "
                          "(read_raw_bids), epoch it with mne.Epochs using the condition names, and pass the -epo.fif")
    try:
        epochs = mne.read_epochs(path, preload=True, verbose="error")
    except Exception as exc:  # MNE raises many kinds; one line for the user
        raise EpochsError(f"{path}: MNE cannot read it as epochs ({type(exc).__name__}: {exc})") from None
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
    channels: list[str]
    rho: np.ndarray  # [n_channels], selected neurons
    control: np.ndarray  # [n_controls, n_channels], random neurons of the same count
    model_rdm: np.ndarray  # [C, C], selected neurons
    brain_rdm: np.ndarray  # [C, C], mean over channels
    regions: dict[str, list[str]] | None = None

    def by_region(self) -> dict[str, dict[str, float]]:
        """{region: {"rho": mean ρ, "control": mean control ρ}} (one region "all" without labels)."""
        groups = self.regions or {"all": self.channels}
        idx = {c: i for i, c in enumerate(self.channels)}
        out = {}
        for region, chans in groups.items():
            ii = [idx[c] for c in chans]
            out[region] = {"rho": float(np.nanmean(self.rho[ii])), "control": float(np.nanmean(self.control[:, ii]))}
        return out

    def table(self) -> str:
        rows = [f"{'region':16s} {'rho':>7s} {'random':>7s}"]
        rows += [f"{r:16s} {v['rho']:7.3f} {v['control']:7.3f}" for r, v in self.by_region().items()]
        return "\n".join(rows)


def model_brain_rsa(model_spectra: Sequence[np.ndarray], freqs: np.ndarray, selected: np.ndarray, epochs, *,
                    conditions: Sequence[str] = CONDITIONS, regions: Mapping[str, Sequence[str]] | None = None,
                    n_controls: int = 20, seed: int = 0, band=BAND, center: bool = True) -> RsaResult:
    """RSA of the selected neurons (bool [n_neurons]) and of `n_controls` random sets of the same size.

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
    chosen = model_rdm([s[:, selected] for s in model_spectra], freqs, band, center)
    rho = rsa(chosen, brain)
    rng = np.random.default_rng(seed)
    n, k = selected.size, int(selected.sum())
    control = np.stack([rsa(model_rdm([s[:, idx] for s in model_spectra], freqs, band, center), brain)
                        for idx in (rng.choice(n, size=k, replace=False) for _ in range(n_controls))])
    return RsaResult(channels, rho, control, chosen, np.nanmean(brain, 0), regions)


def check_regions(epochs, regions: Mapping[str, Sequence[str]]) -> None:
    """Region labels must name channels the epochs have."""
    unknown = [c for chans in regions.values() for c in chans if c not in epochs.ch_names]
    if unknown:
        raise EpochsError(f"region labels name channels the epochs lack: {', '.join(unknown[:5])}")
