"""Matplotlib without a display: a figure in, PNG bytes out (for reports and atlases).

Figures are made with `matplotlib.figure.Figure`, not pyplot, so the library never switches
the process's backend (a notebook's inline plots keep working) and leaves no open figures.
"""

from __future__ import annotations

import io


def subplots(**kwargs):
    """Like `plt.subplots`, on a standalone Figure: (fig, ax)."""
    from matplotlib.figure import Figure

    fig_kw = {k: kwargs.pop(k) for k in ("figsize", "dpi", "layout") if k in kwargs}
    fig = Figure(**fig_kw)
    return fig, fig.subplots(**kwargs)


def png(fig) -> bytes:
    """Lay out and render `fig`; its PNG bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
