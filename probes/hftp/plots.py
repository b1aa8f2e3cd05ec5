"""HFTP figures (matplotlib, PNG bytes): spectra with the tagged rates marked, per-layer counts, RSA."""

from __future__ import annotations

import numpy as np

from interp.plotting import png, subplots

from .probe import LABELS, HftpResult, frequencies


def spectra_png(result: HftpResult, n_words: int) -> bytes:
    """Mean amplitude spectrum of the significant neurons (experiment vs control), rates marked."""
    fig, ax = subplots(figsize=(7, 3.5), dpi=100)
    f = frequencies(n_words).numpy()
    exp, ctl = [], []
    for site, spec in result.spectra["experiment"].items():
        sig = np.zeros(spec.shape[1], dtype=bool)
        for name in result.significant:
            sig |= result.significant[name][site].numpy()
        if sig.any():
            exp.append(spec[:, sig].numpy())
            ctl.append(result.spectra["control"][site][:, sig].numpy())
    if exp:
        ax.plot(f, np.concatenate(exp, 1).mean(1), label="sentences", lw=1.2)
        ax.plot(f, np.concatenate(ctl, 1).mean(1), label="word-shuffled control", lw=1.2)
    for name, rate in result.rates.items():
        ax.axvline(rate, color="tab:red", ls="--", lw=0.8)
        ax.text(rate, ax.get_ylim()[1] * 0.95, f" {name} {rate:g} Hz", color="tab:red", fontsize=7, va="top")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("amplitude (significant neurons)")
    ax.legend(fontsize=7)
    return png(fig)


def counts_png(result: HftpResult) -> bytes:
    """Stacked bars per site: sentence-only, phrase-only, shared."""
    counts = result.counts()
    fig, ax = subplots(figsize=(max(5, 0.3 * len(counts)), 3.5), dpi=100)
    x = np.arange(len(counts))
    bottom = np.zeros(len(counts))
    for label in LABELS:
        v = np.array([c[label] for c in counts.values()])
        ax.bar(x, v, bottom=bottom, label=label)
        bottom += v
    ax.set_xticks(x, [s.split(".")[1] if s.startswith("blocks.") else s for s in counts], fontsize=6)
    ax.set_xlabel("layer")
    ax.set_ylabel("syntax neurons")
    ax.legend(fontsize=7)
    return png(fig)


def rsa_png(model_rdm: np.ndarray, brain_rdm: np.ndarray, conditions, by_region: dict) -> bytes:
    """The model RDM, the mean brain RDM, and ρ per region against the random-neuron control."""
    fig, (a, b, c) = subplots(nrows=1, ncols=3, figsize=(12, 3.6), dpi=100)
    for ax, rdm, title in ((a, model_rdm, "model RDM"), (b, brain_rdm, "brain RDM (mean over channels)")):
        im = ax.imshow(rdm, cmap="viridis")
        ax.set_xticks(range(len(conditions)), conditions, rotation=45, fontsize=6)
        ax.set_yticks(range(len(conditions)), conditions, fontsize=6)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    regions = list(by_region)
    x = np.arange(len(regions))
    bars = (("rho", "syntax neurons"), ("control", "random neurons"), ("non_syntax", "random non-syntax neurons"))
    for i, (key, label) in enumerate(bars):
        c.bar(x + (i - 1) * 0.27, [by_region[r][key] for r in regions], 0.27, label=label)
    c.set_xticks(x, regions, fontsize=7)
    c.set_ylabel("Spearman ρ")
    c.legend(fontsize=7)
    return png(fig)
