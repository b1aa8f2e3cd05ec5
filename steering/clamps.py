"""Neuron clamps (Davies 2025, METHODS.md §B step 5): fix one neuron's value and watch a concept.

A concept neuron (found by LM-head decoding: `atlas.neurons_for(" dog")`) is
clamped to a value c at every position. Where depends on the direction it was
found by (the paper's option "site: the product feeding down_proj, or up_proj
output"):

- `write` (default): `blocks.L.mlp.hook_post`, the input of down_proj, so the
  neuron writes c · its write direction into the residual stream;
- `up`: the neuron found by its read direction (row of up_proj) is clamped where
  that direction is read, `blocks.L.mlp.hook_pre_linear` (the up_proj output;
  the neuron then writes act(gate) · c · its write direction). On ungated MLPs
  (GPT-2, NeoX) the up projection's output is `mlp.hook_pre` (before the
  activation), so `up` clamps there.

The writer returns `interp.Clamp` edits; `clamp_sweep` measures P(concept) as
the next token after neutral prompts over a sweep of values on the steering harness
(`steering.evaluate.sweep`, no generation: the family `(layer, value) → [clamp]`, the
`TokenProbability` scorer); what stays here is what is specific to clamps: the edit,
its site, and `pick_value`, the least value that multiplies P(concept) by a target gain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

import interp
from interp.batching import encode_left
from interp.edits import POSITIONS, EditError

NEUTRAL_PROMPTS: tuple[str, ...] = (
    "I would like to tell you about the",
    "Yesterday I saw a",
    "My favourite thing in the world is the",
    "The picture showed a",
    "She pointed at the",
    "Here is a short story about a",
    "He bought a new",
    "Everyone was talking about the",
)
DEFAULT_SWEEP: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 40.0)


CLAMP_DIRECTIONS: tuple[str, ...] = ("write", "up")


def neuron_site(layer: int, site: str = "mlp.hook_post") -> str:
    return f"blocks.{layer}.{site}"


def clamp_site(model: interp.Model, direction: str = "write") -> str:
    """The per-layer site a concept neuron found by `direction` is clamped at (module docstring)."""
    if direction not in CLAMP_DIRECTIONS:
        raise EditError(f"concept direction must be one of {', '.join(CLAMP_DIRECTIONS)}, not {direction!r}")
    if direction == "write":
        return "mlp.hook_post"
    return "mlp.hook_pre_linear" if model.adapter.gated else "mlp.hook_pre"


def concept_clamp(layer: int, neuron: int, value: float, *, positions: str = "all",
                  site: str = "mlp.hook_post") -> interp.Clamp:
    """The edit: neuron `neuron` of layer `layer` held at `value` at `site` (`clamp_site`; positions: all /
    prompt / generated)."""
    if positions not in POSITIONS:
        raise EditError(f"positions must be one of {', '.join(POSITIONS)}, not {positions!r}")
    return interp.Clamp(neuron_site(layer, site), [int(neuron)], [float(value)], positions)


def single_token_ids(tokenizer, token: str) -> list[int]:
    """The id of `token` (e.g. " dog") if it is one token; a clear error otherwise."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise EditError(f"{token!r} is {len(ids)} tokens for this tokenizer ({ids}); a concept must be one token")
    return ids


@torch.inference_mode()
def next_token_probability(model: interp.Model, prompts: Sequence[str], token_ids: Sequence[int],
                           edits: Sequence = ()) -> torch.Tensor:
    """P(next token ∈ token_ids) after each prompt, under `edits`: [n_prompts] float32."""
    enc = {k: v.to(model.device) for k, v in encode_left(model.tokenizer, prompts).items()}
    with interp.edit(model, edits):
        logits = model.hf(**enc, use_cache=False).logits[:, -1].float()
    return logits.softmax(-1)[:, list(token_ids)].sum(-1).cpu()


@dataclass
class ClampSweep:
    """P(concept) on neutral prompts with one neuron clamped to each value.

    probs: [n_values, n_prompts]; baseline: [n_prompts] (no edit).
    """

    token: str
    layer: int
    neuron: int
    values: list[float]
    probs: torch.Tensor
    baseline: torch.Tensor
    prompts: list[str] = field(default_factory=list)
    site: str = "mlp.hook_post"

    def mean(self) -> torch.Tensor:
        """Mean P(concept) per value: [n_values]."""
        return self.probs.mean(1)

    def gain(self) -> torch.Tensor:
        """Mean P(concept) per value over the unedited mean: [n_values]."""
        return self.mean() / self.baseline.mean().clamp_min(1e-12)

    def table(self) -> str:
        at = "" if self.site == "mlp.hook_post" else f" at {self.site}"
        lines = [f"{self.token!r}: layer {self.layer} neuron {self.neuron}{at}; "
                 f"baseline P = {self.baseline.mean():.3g}",
                 f"{'value':>8} {'P(concept)':>11} {'× baseline':>11}"]
        for v, p, g in zip(self.values, self.mean().tolist(), self.gain().tolist()):
            lines.append(f"{v:8.3g} {p:11.3g} {g:11.3g}")
        return "\n".join(lines)


def clamp_sweep(model: interp.Model, token: str, layer: int, neuron: int, values: Sequence[float],
                prompts: Sequence[str] = NEUTRAL_PROMPTS, *, site: str = "mlp.hook_post") -> ClampSweep:
    """Clamp (layer, neuron) at `site` to each value in turn; P(token) as the next token after each prompt
    (one `steering.evaluate.sweep` over the values at one layer, one forward per value)."""
    from steering.evaluate import Outputs, TokenProbability, sweep

    ids = single_token_ids(model.tokenizer, token)
    prompts = list(prompts)
    if not prompts or not values:
        raise EditError("clamp sweep needs at least one prompt and one value")
    scorer = TokenProbability(ids, name=f"p({token})")
    result = sweep(model, lambda l, v: [concept_clamp(l, neuron, v, site=site)], prompts, [layer], list(values),
                   [scorer], generation={"max_new_tokens": 0})
    probs = torch.stack([s.scores[scorer.name] for s in result.settings]).float()  # [n_values, n_prompts]
    base = scorer(Outputs(model, prompts, (), [])).float()
    return ClampSweep(token, layer, neuron, [float(v) for v in values], probs, base, prompts, site)


def pick_value(sweep: ClampSweep, target_gain: float = 10.0) -> float:
    """The swept value of least magnitude that multiplies P(concept) by `target_gain` (else the best one).

    Strong enough to steer, short of the largest values, which tend to make the
    model repeat the concept word.
    """
    gain = sweep.gain().tolist()
    for v, g in sorted(zip(sweep.values, gain), key=lambda vg: abs(vg[0])):
        if g >= target_gain:
            return v
    return sweep.values[max(range(len(gain)), key=gain.__getitem__)]
