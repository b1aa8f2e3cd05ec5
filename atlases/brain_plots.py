"""Plots for the brain atlas report: each axis's held-out reliability against the recovery threshold,
and its validation r with every lexicon."""

from __future__ import annotations

import numpy as np

from interp.plotting import png, subplots


def axes_png(atlas) -> bytes:
    """Two panels: each axis's reliability (recovered ones coloured) against the permutation threshold,
    and r per axis × lexicon."""
    fig, (a, b) = subplots(nrows=1, ncols=2, figsize=(11, 3.6), dpi=100)
    k = np.arange(atlas.n_axes)
    colours = ["tab:blue" if r else "lightgray" for r in atlas.recovered]
    a.bar(k, atlas.reliability, color=colours)
    a.axhline(atlas.threshold, color="tab:red", linestyle="--", label=f"threshold {atlas.threshold:.2f}")
    a.set_xlabel("axis")
    a.set_ylabel("held-out r")
    a.set_title(f"{int(atlas.recovered.sum())} of {atlas.n_axes} axes recovered "
                f"({int(atlas.kept.sum())} state PCs above threshold)", fontsize=9)
    a.legend(fontsize=7)
    names = list(atlas.validation)
    grid = np.array([atlas.validation[n] for n in names]) if names and atlas.n_axes else np.zeros((1, 1))
    im = b.imshow(grid, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    b.set_yticks(range(len(names)), names, fontsize=7)
    b.set_xlabel("axis")
    b.set_title("validation r with lexica", fontsize=9)
    fig.colorbar(im, ax=b, fraction=0.046)
    return png(fig)
