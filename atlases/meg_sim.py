"""Simulated MEG with planted word-locked phase structure, for tests and the demo (MNE).

The sensors are the first `n_channels` gradiometers of MNE's canonical Neuromag layout.
Every channel carries a theta oscillation with its own drifting phase. For each planted
property k a group of channels also follows a shared driver phase, mixed in with weight
w_k(t) = `coupling` · σ(`gain` · p_k(word heard at t)), p_k the standardised property. So
the phase locking within group k rises and falls with property k of the words being
heard — exactly what the atlas's PLV states and lagged ridge should pick up. Sensor
noise comes from `mne.simulation.add_noise`. With `effects={}` there is nothing to find.

`story_words` gives a word stream to hear: KJV verses from the offline Bible.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .words import Words, normalise


def story_words(n_words: int = 1200, *, start: int = 0) -> list[str]:
    """The first `n_words` words of English Bible verses (KJV), as they appear (punctuation kept)."""
    from interp.corpora import bible_verses

    out: list[str] = []
    limit = 200
    while len(out) < start + n_words:
        verses = bible_verses("en", limit=limit)
        out = [w for d in verses for w in d.text.split() if normalise(w)]
        if len(verses) < limit:
            break
        limit *= 2
    return out[start:start + n_words]


def simulate_meg(words: Sequence[str], effects: Mapping[str, Sequence[float]], *, soa: float = 0.45,
                 jitter: float = 0.1, n_channels: int = 24, group_size: int = 6, coupling: float = 0.9,
                 gain: float = 2.0, theta: float = 5.5, sfreq: float = 200.0, noise: float = 0.5,
                 lead: float = 2.0, seed: int = 0):
    """A Raw recording of `words` heard one after another, and their `Words` (onsets in s).

    effects: {property name: one value per word}; property k drives channel group k
    (channels k·group_size … (k+1)·group_size − 1). Returns (raw, words, groups {name: channels}).
    """
    import mne

    rng = np.random.default_rng(seed)
    n = len(words)
    if len(effects) * group_size > n_channels:
        raise ValueError(f"{len(effects)} effects × {group_size} channels do not fit in {n_channels} channels")
    gaps = soa + rng.uniform(-jitter, jitter, size=n)
    onsets = lead + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    duration = onsets[-1] + soa + lead
    t = np.arange(int(duration * sfreq)) / sfreq
    heard = np.clip(np.searchsorted(onsets, t, side="right") - 1, 0, n - 1)
    before = t < onsets[0]

    def drifting_phase() -> np.ndarray:
        freq = theta + rng.uniform(-1.0, 1.0)
        return 2 * np.pi * freq * t + np.cumsum(rng.normal(0, 0.05, t.size))

    canon = mne.channels.read_meg_canonical_info("neuromag")
    grads = mne.pick_types(canon, meg="grad")[:n_channels]
    info = mne.create_info([canon.ch_names[g] for g in grads], sfreq, ch_types="grad")
    phasors = np.exp(1j * np.stack([drifting_phase() for _ in range(n_channels)]))  # [C, T]
    groups = {}
    for k, (name, values) in enumerate(effects.items()):
        v = np.asarray(values, dtype=float)
        if v.shape != (n,):
            raise ValueError(f"effect {name!r} needs one value per word ({n}), got shape {v.shape}")
        p = (v - v.mean()) / (v.std() or 1.0)
        w = coupling / (1 + np.exp(-gain * p[heard]))
        w[before] = 0.0
        driver = np.exp(1j * drifting_phase())
        rows = list(range(k * group_size, (k + 1) * group_size))
        groups[name] = [info.ch_names[r] for r in rows]
        for r in rows:
            mixed = w * driver * np.exp(1j * rng.uniform(0, 2 * np.pi)) + (1 - w) * phasors[r]
            phasors[r] = mixed / np.maximum(np.abs(mixed), 1e-12)
    data = 1e-11 * np.real(phasors)  # ~10 pT/m oscillations
    raw = mne.io.RawArray(data, info, verbose="error")
    cov = mne.Covariance(np.eye(n_channels) * (noise * 1e-11) ** 2, info.ch_names, bads=[], projs=[], nfree=1,
                         verbose="error")
    mne.simulation.add_noise(raw, cov, iir_filter=None, rng=int(rng.integers(2 ** 31)), verbose="error")
    return raw, Words(onsets, list(words)), groups
