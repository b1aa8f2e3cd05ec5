"""Simulated recordings under the HFTP design, for tests and the demo (MNE: EpochsArray + mne.simulation).

Channels (sEEG contacts) belong to regions. In "syntax" regions the signal is phase-locked
to the stimulus structure of each condition: the sentence and phrase rates (1 and 2 Hz) in
Sentence blocks, the phrase rate in Phrase blocks, nothing in Random blocks; every region
also follows the word rate (4 Hz) in every condition, like auditory cortex. "Noise"
regions follow only the word rate. Sensor noise comes from `mne.simulation.add_noise`
with a diagonal covariance. Every array is reproducible from the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .brain import CONDITIONS
from .stimuli import WORD_RATE

LOCKED = {"Sentence": (1.0, 2.0), "Phrase": (2.0,), "Random": ()}


def simulate_epochs(regions: Mapping[str, int] | None = None, syntax_regions: Sequence[str] = ("syntax",), *,
                    n_trials: int = 20, n_words: int = 48, sfreq: float = 100.0, amplitude: float = 1.0,
                    noise: float = 2.0, conditions: Sequence[str] = CONDITIONS, ch_type: str = "seeg",
                    seed: int = 0):
    """EpochsArray with one event per condition name ("Sentence/1", …) and region → channel labels.

    ch_type: "seeg" (default), "eeg" or "mag" (MEG magnetometers, which `write_bids` can store as FIF).

    Returns (epochs, {region: [channel names]}).
    """
    import mne

    regions = dict(regions or {"syntax": 4, "noise": 4})
    names, labels = [], {}
    for region, n in regions.items():
        labels[region] = [f"{region}-{i}" for i in range(n)]
        names += labels[region]
    info = mne.create_info(names, sfreq, ch_types=ch_type)
    rng = np.random.default_rng(seed)
    n_times = int(round(n_words / WORD_RATE * sfreq))
    t = np.arange(n_times) / sfreq
    data, events, event_id = [], [], {}
    for ci, cond in enumerate(conditions):
        event_id[cond] = ci + 1
        kind = cond.split("/")[0]
        if kind not in LOCKED:
            raise ValueError(f"condition {cond!r}: kind must be one of {', '.join(LOCKED)}")
        for _ in range(n_trials):
            trial = np.zeros((len(names), n_times))
            trial += 0.5 * amplitude * np.cos(2 * np.pi * WORD_RATE * t)  # the word rate, everywhere
            for region, chans in labels.items():
                if region not in syntax_regions:
                    continue
                rows = [names.index(c) for c in chans]
                for f in LOCKED[kind]:
                    trial[rows] += amplitude * np.cos(2 * np.pi * f * t + 0.3)
            data.append(trial)
            events.append([len(events) * n_times, 0, ci + 1])
    epochs = mne.EpochsArray(np.stack(data) * 1e-5, info, events=np.array(events), event_id=event_id, tmin=0.0,
                             verbose="error")
    cov = mne.Covariance(np.eye(len(names)) * (noise * 1e-5) ** 2, names, bads=[], projs=[], nfree=1,
                         verbose="error")
    mne.simulation.add_noise(epochs, cov, iir_filter=None, rng=int(rng.integers(2 ** 31)), verbose="error")
    return epochs, labels


def write_bids(epochs, root: str | Path, subject: str = "01", task: str = "hftp") -> Path:
    """Store simulated MEG epochs as one continuous BIDS recording (mne-bids, FIF), each trial an event
    named by its condition with the trial's duration — the layout `brain.read_bids_epochs` reads.

    Returns the recording's path. MEG channels only (BIDS stores EEG/iEEG in formats that need
    extra writers)."""
    import tempfile

    import mne
    import mne_bids

    data = epochs.get_data(copy=True)  # [n_trials, n_channels, n_times]
    n_trials, _, n_times = data.shape
    sfreq = epochs.info["sfreq"]
    raw = mne.io.RawArray(np.concatenate(list(data), axis=1), epochs.info, verbose="error")
    names = {code: name for name, code in epochs.event_id.items()}
    raw.set_annotations(mne.Annotations(np.arange(n_trials) * n_times / sfreq, [n_times / sfreq] * n_trials,
                                        [names[code] for code in epochs.events[:, 2]]))
    path = mne_bids.BIDSPath(subject=subject, task=task, root=Path(root), datatype="meg", suffix="meg",
                             extension=".fif")
    with tempfile.TemporaryDirectory() as tmp:
        fif = Path(tmp) / "sim_raw.fif"
        raw.save(fif, verbose="error")
        mne_bids.write_raw_bids(mne.io.read_raw_fif(fif, verbose="error"), path, event_id=dict(epochs.event_id),
                                overwrite=True, verbose="error")
    return path.fpath
