"""MILAN editing (Hernandez et al. 2022, §F "editing"): delete the neurons a description search found.

`delete_edits` turns search hits (`probes.milan.search`) into one `Clamp(site, units, 0)` per
site, applied through the edit engine like any other recipe (reversible, savable).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import interp
from interp.edits import EditError
from probes.milan import Hit


def delete_edits(hits: Sequence[Hit], *, min_similarity: float | None = None) -> list[interp.Clamp]:
    """One Clamp-to-zero per site over the hits (those at or above `min_similarity`, when given)."""
    by_site: dict[str, list[int]] = defaultdict(list)
    for h in hits:
        if min_similarity is None or h.similarity >= min_similarity:
            if h.unit not in by_site[h.site]:
                by_site[h.site].append(h.unit)
    if not by_site:
        raise EditError("no described neuron matches closely enough to delete")
    return [interp.Clamp(site, sorted(units), 0.0) for site, units in by_site.items()]
