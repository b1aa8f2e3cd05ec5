"""Steering writers: turn findings into edits (`interp.Add`, `interp.Clamp`, …).

A writer never registers a hook; it returns edits, and `interp.edit` /
`interp.generate` apply them.

- `actadd` / `contrast_direction`: contrastive activation addition (ActAdd / CAA),
  the baseline writer — mean(positive) − mean(negative) activations at a site.
"""

from .actadd import ContrastDirection, actadd, contrast_direction, mean_activation

__all__ = ["ContrastDirection", "actadd", "contrast_direction", "mean_activation"]
