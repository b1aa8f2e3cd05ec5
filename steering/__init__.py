"""Steering writers: turn findings into edits (`interp.Add`, `interp.Clamp`, …).

A writer never registers a hook; it returns edits, and `interp.edit` /
`interp.generate` apply them.

- `actadd` / `contrast_direction`: contrastive activation addition (ActAdd / CAA),
  the baseline writer — mean(positive) − mean(negative) activations at a site.
- `clamps`: hold a concept neuron at a value; sweep values measuring P(concept).
- `evaluate`: the one harness for every writer — sweep layers × strengths, score effect, fluency and side
  effects (`capability`: a held-out arithmetic / copying / facts set), recommend a setting.
- `language`: deactivate / activate a language's neurons; the perplexity ablation grid.
- `foxp2`: Neural FOXP2's shifts on target and English neurons, the random-direction control, strength
  calibration and the evaluation table (`language_eval`, `neutral_prompts`).
- `dopamine`, `dopamine_digits`, `dopamine_lm`: Dopamine gates (per-unit τ and g) trained on a frozen
  network; the one writer that registers hooks itself, through `interp.hooks`, because its gates
  must carry gradients while they train — the trained result is `interp.Gate` edits like any other.
"""

from .actadd import ContrastDirection, actadd, contrast_direction, mean_activation

__all__ = ["ContrastDirection", "actadd", "contrast_direction", "mean_activation"]
