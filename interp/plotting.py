"""Matplotlib without a display: a figure in, PNG bytes out (for reports and atlases)."""

from __future__ import annotations

import io


def subplots(**kwargs):
    """`plt.subplots` on the non-interactive Agg backend: (fig, ax)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kwargs)


def png(fig) -> bytes:
    """Lay out, render and close `fig`; its PNG bytes."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
