"""Neural FOXP2 edits (Saha et al. 2026; METHODS.md §D step 3): make a target language the default.

In each layer of the intervention window, at the layer's steering site (`Foxp2Layer.site`: the neurons
`blocks.L.mlp.hook_post` by default, or the paper's h_l, the residual stream `blocks.L.hook_resid_post`,
where N_T / N_EN are residual dimensions):

- positive shift: h ← h + α · 1_{N_T} ⊙ U_kᵀ U_k d̄ — the mean English→target shift d̄
  projected on the layer's top-k target directions U_k [k, d_mlp], on the target neurons
  N_T only (an `interp.Add`);
- compensating negative shift: h ← h − β · 1_{N_EN} ⊙ (h E Eᵀ) — the component of h along
  the English directions E [r, d_mlp] (−d̄, or the top-k of the spectrum's English side), removed
  (β = 1) or shrunk on the English neurons N_EN only (an `interp.Ablate` with strength β and units N_EN).

The directions and neuron sets come from `probes.foxp2.analyze` (spectra of parallel-text
differences; SAE features traced to neurons) via `window_from_analysis`, or from
language-neuron masks via `window_from_neuron_sets`; every quantity is an input, so each
choice is a setting. `positive` / `negative` switch the parts off for ablations, and
`random_direction_edits` is the equal-norm random-direction control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

import interp
from interp.edits import EditError


@dataclass
class Foxp2Layer:
    """What one window layer needs. Tensors over d_mlp."""

    layer: int
    directions: torch.Tensor  # U_k [k, d_mlp], target directions (rows)
    mean_diff: torch.Tensor  # d̄ [d_mlp], mean target − English activation
    target_neurons: Sequence[int]  # N_T
    english_neurons: Sequence[int]  # N_EN
    english_directions: torch.Tensor  # E [r, d_mlp]
    site: str = "mlp.hook_post"  # per-layer site name: mlp.hook_post (neurons) or hook_resid_post (the paper's h_l)

    @property
    def site_name(self) -> str:
        return f"blocks.{self.layer}.{self.site}"

    def shift(self) -> torch.Tensor:
        """1_{N_T} ⊙ U_kᵀ U_k d̄ : [d_mlp] (U_k orthonormalised first)."""
        q, _ = torch.linalg.qr(self.directions.double().T)  # [d_mlp, k]
        along = (q @ (q.T @ self.mean_diff.double())).float()
        mask = torch.zeros_like(along)
        mask[list(self.target_neurons)] = 1.0
        return mask * along


def layer_scale(w: Foxp2Layer, window: Sequence[Foxp2Layer], alpha: float) -> float:
    """α at a neuron site; α / (window layers) at the residual stream, which carries each layer's shift on to the
    next: there the window's shifts add up, so α = 1 brings about one d̄ by the window's end (as at the neurons,
    where each layer's shift is that layer's own)."""
    return alpha / len(window) if w.site.startswith("hook_resid") else alpha


def foxp2_edits(window: Sequence[Foxp2Layer], *, alpha: float = 1.0, beta: float = 1.0, positions: str = "all",
                positive: bool = True, negative: bool = True) -> list:
    """The edits for every window layer (an Add and/or a masked partial Ablate per layer)."""
    if not window:
        raise EditError("FOXP2 needs at least one window layer")
    if not (positive or negative):
        raise EditError("FOXP2 with neither the positive nor the negative shift does nothing")
    edits: list = []
    for w in window:
        site = w.site_name
        if positive:
            if not len(w.target_neurons):
                raise EditError(f"layer {w.layer}: no target neurons")
            edits.append(interp.Add(site, w.shift(), layer_scale(w, window, alpha), positions))
        if negative:
            if not len(w.english_neurons):
                raise EditError(f"layer {w.layer}: no English neurons")
            edits.append(interp.Ablate(site, w.english_directions, positions, strength=beta,
                                       units=list(w.english_neurons)))
    return edits


def random_direction_edits(window: Sequence[Foxp2Layer], *, alpha: float = 1.0, beta: float = 1.0,
                           positions: str = "all", seed: int = 0, negative: bool = True) -> list:
    """The control: FOXP2 with each layer's positive shift replaced by a random direction of the same
    norm on the same target neurons (the negative shift unchanged, or left out)."""
    g = torch.Generator().manual_seed(seed)
    edits: list = []
    for w in window:
        shift = w.shift()
        idx = list(w.target_neurons)
        rand = torch.zeros_like(shift)
        rand[idx] = torch.randn(len(idx), generator=g)
        rand *= shift.norm() / rand.norm().clamp(min=1e-12)
        edits.append(interp.Add(w.site_name, rand, layer_scale(w, window, alpha), positions))
        if negative:
            edits += foxp2_edits([w], alpha=alpha, beta=beta, positions=positions, positive=False)
    return edits


def window_from_analysis(analysis) -> list[Foxp2Layer]:
    """One Foxp2Layer per window layer of a `probes.foxp2.Foxp2Analysis` (its spectra, localisation, site and
    English directions)."""
    if not analysis.layers:
        raise EditError("the analysis has no localised layers (run it with localisation)")
    return window_from_neuron_sets({l: analysis.spectra[l] for l in analysis.layers},
                                   {l: f.target_neurons for l, f in analysis.layers.items()},
                                   {l: f.english_neurons for l, f in analysis.layers.items()},
                                   site=getattr(analysis.settings, "site", "mlp.hook_post"),
                                   english=getattr(analysis, "english", None))


def window_from_neuron_sets(spectra: dict, target_neurons: dict[int, Sequence[int]],
                            english_neurons: dict[int, Sequence[int]], *, site: str = "mlp.hook_post",
                            english: dict | None = None) -> list[Foxp2Layer]:
    """One Foxp2Layer per layer that has target neurons and a spectrum.

    spectra: {layer: probes.language_directions.Spectrum} of the English→target differences at `site`;
    the English directions are `english[layer]` where given, else −d̄ (the English side of the mean
    shift); a layer with no English neurons of its own uses its target neurons for the compensating shift.
    """
    window = []
    for layer in sorted(target_neurons):
        if layer not in spectra or not len(target_neurons[layer]):
            continue
        sp = spectra[layer]
        english_units = english_neurons.get(layer) or target_neurons[layer]
        e = english[layer] if english and layer in english else -sp.mean_diff[None, :]
        window.append(Foxp2Layer(layer, sp.directions, sp.mean_diff, list(target_neurons[layer]),
                                 list(english_units), e, site))
    if not window:
        raise EditError("no layer has both target neurons and a spectrum")
    return window


def foxp2_table(model: interp.Model, window: Sequence[Foxp2Layer], target: str, texts: dict, *,
                alpha: float = 1.5, beta: float = 1.0, strengths: Sequence[float] | None = None,
                actadd_scales: Sequence[float] = (0.5, 1.0, 2.0), ablations: bool = True, **eval_kwargs):
    """The evaluation table on held-out neutral prompts (`steering.neutral_prompts`): FOXP2 at
    `strengths` (default 2/3, 1 and 4/3 × alpha), and with `ablations` only its positive shift,
    only its negative shift, a random direction of the same norm, and ActAdd (the parallel texts'
    contrast, `texts[target]` minus `texts["en"]`, at the residual stream entering the window's
    middle layer)."""
    from .actadd import actadd
    from .language_eval import evaluate
    from .neutral_prompts import NEUTRAL

    if target not in NEUTRAL:
        raise EditError(f"no held-out neutral prompts in {target!r} (have {', '.join(NEUTRAL)})")
    strengths = strengths or (alpha * 2 / 3, alpha, alpha * 4 / 3)
    layers = [w.layer for w in window]
    site = f"blocks.{layers[len(layers) // 2]}.hook_resid_pre"
    variants = [("FOXP2", a, foxp2_edits(window, alpha=a, beta=beta)) for a in strengths]
    if not ablations:
        return evaluate(model, variants, target, NEUTRAL["en"], NEUTRAL[target], **eval_kwargs)
    variants += [("positive shift only", alpha, foxp2_edits(window, alpha=alpha, negative=False)),
                 ("negative shift only", alpha, foxp2_edits(window, alpha=alpha, beta=beta, positive=False)),
                 ("random direction, same norm", alpha, random_direction_edits(window, alpha=alpha, beta=beta))]
    pos, neg = texts[target][:32], texts["en"][:32]
    variants += [(f"ActAdd ({site})", s, actadd(model, pos, neg, site, s, skip_first=True)) for s in actadd_scales]
    return evaluate(model, variants, target, NEUTRAL["en"], NEUTRAL[target], **eval_kwargs)


STRENGTHS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


def calibrate_strength(model: interp.Model, window: Sequence[Foxp2Layer], target: str, prompts: Sequence[str], *,
                       beta: float = 1.0, share: float = 0.9, strengths: Sequence[float] = STRENGTHS,
                       candidates: Sequence[str] = ("en", "es", "fr", "de"), **generation) -> tuple[float, list]:
    """The smallest α in `strengths` whose continuations of `prompts` reach `share` in the target language
    (the largest α when none does), and the sweep [(α, share)]: the least push, the least fluency cost.

    `prompts` must be kept apart from any evaluation prompts (`steering.neutral_prompts.CALIBRATION`
    is: the CLI and the tests calibrate on it and evaluate on `NEUTRAL`).
    """
    from interp.language_id import language_share

    from .language_eval import GENERATION

    gen = {**GENERATION, **generation}
    cands = sorted({*candidates, target, "en"})
    sweep = []
    for a in sorted(strengths):
        out = interp.generate(model, list(prompts), foxp2_edits(window, alpha=a, beta=beta), **gen)
        sweep.append((a, language_share(out, target, cands)))
        if sweep[-1][1] >= share:
            return a, sweep
    return sweep[-1][0], sweep

