"""Steering along brain-grounded axes (Andric 2025; METHODS.md §G steps 5–6).

Direction: the adapter's row for the axis turned into a unit hidden-state direction
(`AxisAdapter.direction`: coef / scale, the gradient; the public code's coef × scale is
`AxisSteerSettings.public_code`), added as `s · unit · v` to `blocks.{layer}.hook_resid_post`
(the block output) at every position. `unit` is `norm_fraction` × the mean residual norm at
that layer on the prompts, so strengths mean the same on any model (the paper's raw
s ∈ {−2..2} on a unit vector, `AxisSteerSettings.raw_strength`, is ~1 % of smollm2's
residual norm); `sign` orients the axis (e.g. +1 when its scores rise with log frequency).
The adapter is the steering layer's own by default; the paper's is fitted at the last layer
(`AxisSteerSettings.adapter`, its direction then added at the steering layer).

Evaluation (`evaluate_axis`, a sweep of the evaluation harness `steering.evaluate` over methods × strengths):
sampled continuations (T 0.7, top-p 0.9) of neutral prompts per strength; each is re-encoded (mean hidden
state over its tokens, given its prompt) and projected through the adapter (`AxisScore`); text metrics: mean
Zipf log frequency of its words and the function/content word ratio; perplexity under the unsteered model.
Positive against negative strengths: Cohen's d and a two-sided permutation p (`evaluate.compare`); the
perplexity-matched control pairs each positive continuation with the negative one of nearest perplexity and
tests the paired differences with sign flips (`evaluate.compare_matched`). The same for a text-probe
direction (ridge from hidden states to log frequency) and ActAdd (common- vs rare-word prompts), at the same
norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

import interp
from interp.errors import InterpError
from interp.paper import PaperSettings, differs

STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 40}

# ActAdd contrast for word frequency: the same scenes told in everyday words and in rare ones (ours).
COMMON_WORDS = [
    "The man went to the store and got some bread and milk for his family.",
    "She said that it was a good day and they all went out to play.",
    "We had a lot of fun at the house with our friends last night.",
    "He put the book on the table and sat down to eat his food.",
    "They walked home in the rain and talked about the old days.",
    "It was a big city with many people and a lot of cars.",
    "I think that you should come with me and see the new school.",
    "The water was cold, so the children ran back to their mother.",
]
RARE_WORDS = [
    "The haberdasher procured victuals and lactic provisions for his progeny.",
    "She averred that the diurnal conditions were salubrious, and they frolicked.",
    "We caroused convivially at the domicile with our confederates nocturnally.",
    "He deposited the tome upon the escritoire and commenced his repast.",
    "They perambulated homeward amid precipitation, reminiscing about bygone epochs.",
    "It was a vast metropolis teeming with denizens and automobiles.",
    "I surmise that you ought to accompany me and inspect the nascent academy.",
    "The effluent was frigid, so the urchins scurried back to their matriarch.",
]


@torch.inference_mode()
def residual_norm(model: interp.Model, layer: int, prompts: Sequence[str]) -> float:
    """Mean L2 norm of `blocks.{layer}.hook_resid_post` over the prompts' tokens (the attention sink left out)."""
    from interp.batching import without_first

    site = f"blocks.{layer}.hook_resid_post"
    batch = interp.tokenize(model.tokenizer, list(prompts))
    acts = interp.run_with_cache(model, batch, [site])[site].float()
    return float(acts.norm(dim=-1)[without_first(batch.mask)].mean())


def axis_edits(direction: np.ndarray | torch.Tensor, layer: int, strength: float, unit: float) -> list[interp.Add]:
    """[Add(blocks.{layer}.hook_resid_post, direction, strength · unit)] (none at strength 0)."""
    if strength == 0:
        return []
    v = torch.as_tensor(np.asarray(direction), dtype=torch.float32)
    return [interp.Add(f"blocks.{layer}.hook_resid_post", v / v.norm(), float(strength * unit))]


@dataclass
class AxisSteerSettings(PaperSettings):
    """How `interp steer brain-axis` turns an atlas axis into an edit (METHODS.md §G step 5)."""

    norm_fraction: float = 0.25  # strength 1 adds this × the layer's mean residual norm (unless raw_strength)
    public_code: bool = differs(  # the direction coef × scale (the public code) instead of coef / scale
        False, paper=True, why="coef × scale is not the direction that raises the axis score: the score is "
        "((h − mean) / scale) · coef, whose gradient is coef / scale; × scale favours the dimensions with the "
        "largest spread (the attention-sink ones)", effect="not measured (the two agree only where every "
        "hidden dimension has the same spread)")
    raw_strength: bool = differs(  # strength s adds s · v, v unit-norm (no residual-norm unit)
        False, paper=True, why="the paper's s ∈ {−2..2} on a unit vector is ~1 % of smollm2's residual norm: the "
        "same s means a different push on every model and layer", effect="not measured")
    adapter: str = differs(  # "same": the steering layer's adapter; "last": the last layer's (the paper)
        "same", paper="last", why="the last layer's adapter direction is read in another layer's space than the "
        "one the edit writes into; the steering layer's own adapter reads the space it steers",
        effect="not measured")


def atlas_axis_edits(model: interp.Model, atlas, axis: int, strength: float, prompts: Sequence[str], *,
                     layer: int | None = None, norm_fraction: float | None = None,
                     settings: AxisSteerSettings | None = None) -> tuple[list[interp.Add], str]:
    """The Add edit along `axis` of a brain-axes atlas (`interp analyze --probe brain-axes`) and a note.

    layer None: the adapter layer with the best held-out R² for the axis (the steering layer). settings:
    the direction, strength units and adapter layer (`AxisSteerSettings`; `norm_fraction`, when given,
    overrides its field). Raises InterpError for an atlas of another kind or model, an axis it did not
    recover, or an adapter layer it lacks."""
    from probes.brain_axes import load_adapter

    settings = settings or AxisSteerSettings()
    if norm_fraction is not None:
        from dataclasses import replace

        settings = replace(settings, norm_fraction=norm_fraction)
    if atlas.method != "brain-axes":
        raise InterpError(f"this is a {atlas.method!r} atlas, not a brain-axes atlas")
    info = atlas.params.get("adapters")
    if info is None:
        raise InterpError("this brain-axes atlas has no adapters (no axis was recovered)")
    if info["model"] != model.name:
        raise InterpError(f"the atlas's adapters were fitted on {info['model']!r}, not {model.name!r}")
    if axis not in info["axes"]:
        raise InterpError(f"axis {axis} is not a recovered axis; recovered: {', '.join(map(str, info['axes']))}")
    if settings.adapter not in ("same", "last"):
        raise InterpError(f"adapter {settings.adapter!r}: use 'same' or 'last'")
    k = info["axes"].index(axis)
    if layer is None:
        layer = max((int(l) for l in info["layers"]), key=lambda l: info["layers"][str(l)]["r2"][k])
    source = layer
    if settings.adapter == "last":
        source = model.adapter.n_layers - 1
        if str(source) not in info["layers"]:
            raise InterpError(f"the atlas has no adapter at the last layer ({source}); it has layers "
                              f"{', '.join(info['layers'])} (interp analyze --probe brain-axes --layers ...)")
    adapter = load_adapter(atlas.tensors, info, source)
    direction = np.asarray(adapter.direction(k, public_code=settings.public_code))
    r2 = info["layers"][str(source)]["r2"][k]
    if settings.raw_strength:
        unit, how = 1.0, "raw units (s · unit vector)"
    else:
        unit = settings.norm_fraction * residual_norm(model, layer, prompts)
        how = f"× {unit:.2f} (= {settings.norm_fraction:g} × mean residual norm)"
    src = "" if source == layer else f", direction from the layer-{source} adapter"
    note = (f"brain axis {axis} at layer {layer} (adapter held-out R² {r2:.2f}{src}), strength {strength:g} {how}, "
            f"direction {'coef × scale (public code)' if settings.public_code else 'coef / scale'}")
    return axis_edits(direction, layer, strength, unit), note


# --------------------------------------------------------------------------- text metrics


def text_metrics(text: str, lang: str = "en") -> tuple[float, float]:
    """(mean Zipf log frequency of the words, function/content ratio); NaN without words."""
    from wordfreq import zipf_frequency

    from interp.lexicon import FUNCTION_WORDS, normalise

    words = [w for w in (normalise(t) for t in text.split()) if w]
    if not words:
        return math.nan, math.nan
    function = sum(w in FUNCTION_WORDS for w in words)
    return float(np.mean([zipf_frequency(w, lang) for w in words])), function / max(len(words) - function, 1)


@torch.inference_mode()
def reencode(model: interp.Model, prompts: Sequence[str], continuations: Sequence[str], layer: int) -> np.ndarray:
    """Mean hidden state at `blocks.{layer}.hook_resid_post` over each continuation's tokens: [n, d]."""
    site = f"blocks.{layer}.hook_resid_post"
    out = []
    for p, c in zip(prompts, continuations, strict=True):
        batch = interp.tokenize(model.tokenizer, [p + c], prompts=[p])
        acts = interp.run_with_cache(model, batch, [site])[site][0].float()
        mask = batch.mask[0]
        out.append((acts[mask].mean(0) if mask.any() else acts[-1]).cpu().numpy())
    return np.stack(out)


@dataclass
class AxisScore:
    """A harness scorer: the adapter's `axis` score of each continuation re-encoded at `layer` (`reencode`),
    times `sign` (the orientation of the axis)."""

    adapter: object  # probes.brain_axes.AxisAdapter
    axis: int
    layer: int
    sign: float = 1.0
    name: str = "axis_score"
    kind: str = "effect"

    def __call__(self, out) -> torch.Tensor:
        scores = self.adapter.predict(reencode(out.model, out.prompts, out.texts, self.layer))[:, self.axis]
        return torch.as_tensor(self.sign * np.asarray(scores), dtype=torch.float64)


def text_metric_scorers() -> list:
    """`text_metrics` as two harness scorers: "log_freq" and "function_ratio" per continuation."""
    from .evaluate import Effect

    def column(k: int):
        return lambda out: torch.tensor([text_metrics(t)[k] for t in out.texts], dtype=torch.float64)

    return [Effect("log_freq", column(0)), Effect("function_ratio", column(1))]


# --------------------------------------------------------------------------- evaluation


@dataclass
class Sample:
    method: str
    strength: float
    prompt: str
    text: str
    log_freq: float
    function_ratio: float
    axis_score: float
    perplexity: float


@dataclass
class Contrast:
    """Positive vs negative strengths for one method and metric."""

    method: str
    metric: str
    d: float
    p: float
    matched_pairs: int
    matched_diff: float  # mean (positive − negative) over perplexity-matched pairs
    matched_p: float
    ppl_pos: float
    ppl_neg: float


@dataclass
class AxisSteeringTable:
    samples: list[Sample] = field(default_factory=list)
    contrasts: list[Contrast] = field(default_factory=list)

    def means(self, method: str, strength: float) -> dict[str, float]:
        rows = [s for s in self.samples if s.method == method and s.strength == strength]
        return {k: float(np.nanmean([getattr(s, k) for s in rows])) for k in
                ("log_freq", "function_ratio", "axis_score", "perplexity")}

    def text(self) -> str:
        lines = [f"{'method':12s} {'s':>5s} {'log freq':>9s} {'func/cont':>9s} {'axis':>8s} {'ppl':>8s}"]
        for method in dict.fromkeys(s.method for s in self.samples):
            for strength in sorted({s.strength for s in self.samples if s.method == method}):
                m = self.means(method, strength)
                lines.append(f"{method:12s} {strength:5.1f} {m['log_freq']:9.3f} {m['function_ratio']:9.3f} "
                             f"{m['axis_score']:8.3f} {m['perplexity']:8.2f}")
        lines.append("")
        lines.append(f"{'method':12s} {'metric':10s} {'d(+/−)':>7s} {'p':>6s} {'ppl +':>7s} {'ppl −':>7s} "
                     f"{'matched n':>9s} {'diff':>7s} {'p':>6s}")
        for c in self.contrasts:
            lines.append(f"{c.method:12s} {c.metric:10s} {c.d:7.2f} {c.p:6.3f} {c.ppl_pos:7.2f} {c.ppl_neg:7.2f} "
                         f"{c.matched_pairs:9d} {c.matched_diff:7.3f} {c.matched_p:6.3f}")
        return "\n".join(lines)


def evaluate_axis(model: interp.Model, directions: dict[str, np.ndarray], adapter, axis: int, layer: int,
                  prompts: Sequence[str], *, strengths: Sequence[float] = STRENGTHS, samples: int = 2,
                  norm_fraction: float = 0.25, sign: float = 1.0, generation: dict | None = None,
                  seed: int = 0) -> AxisSteeringTable:
    """Steer with each {method: direction [d]} at every strength; score continuations (see the module docstring).

    adapter: a `probes.brain_axes.AxisAdapter` at `layer`; `axis` indexes its outputs; `sign` orients the
    reported axis score (the same sign that oriented the axis direction). One harness sweep over methods ×
    strengths (every setting sampled from the same seed), then positive against negative strengths."""
    from .evaluate import Perplexity, compare, compare_matched, sweep

    if not prompts or any(not p.strip() for p in prompts):
        raise InterpError("need non-empty prompts")
    gen = {"repetition_penalty": 1.0, **SAMPLING, **(generation or {})}
    unit = norm_fraction * residual_norm(model, layer, prompts)
    repeated = [p for p in prompts for _ in range(samples)]
    scorers = [*text_metric_scorers(), AxisScore(adapter, axis, layer, sign), Perplexity()]
    result = sweep(model, lambda method, strength: axis_edits(directions[method], layer, strength, unit), repeated,
                   list(directions), strengths, scorers, generation=gen, seed=seed)
    table = AxisSteeringTable()
    for st in result.settings:
        v = {name: st.scores[name].tolist() for name in result.kinds}
        for i, (p, t) in enumerate(zip(repeated, st.texts)):
            table.samples.append(Sample(st.layer, st.strength, p, t, v["log_freq"][i], v["function_ratio"][i],
                                        v["axis_score"][i], v["ppl"][i]))
    for method in directions:
        pos = [st for st in result.settings if st.layer == method and st.strength > 0]
        neg = [st for st in result.settings if st.layer == method and st.strength < 0]
        if not pos or not neg:
            continue
        ppl_pos, ppl_neg = (torch.cat([st.scores["ppl"] for st in side]) for side in (pos, neg))
        for metric in ("log_freq", "function_ratio", "axis_score"):
            a, b = (torch.cat([st.scores[metric] for st in side]) for side in (pos, neg))
            c, m = compare(a, b, seed=seed), compare_matched(a, b, ppl_pos, ppl_neg, seed=seed)
            table.contrasts.append(Contrast(method, metric, c.cohens_d, c.p, len(m.pairs), m.difference, m.p,
                                            float(np.nanmedian(ppl_pos.numpy())), float(np.nanmedian(ppl_neg.numpy()))))
    return table
