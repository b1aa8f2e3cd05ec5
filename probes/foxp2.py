"""Neural FOXP2 analysis (Saha et al. 2026; METHODS.md §D steps 1–2): where a target language lives.

On parallel texts (each English text with its target-language translation):

1. Directions, every layer: D_l = pooled target − English activations at `mlp.hook_post`
   (`probes.language_directions`); SVD spectrum, eigengap rank, effective rank, top-k energy,
   bootstrap stability; the intervention window is the run of layers where energy × stability
   is highest (or a window given by the user).
2. Localize, each window layer: a TopK SAE (SAE-Lens) on the residual stream after the layer,
   trained on both languages' tokens; each live feature's lift toward the target-language
   token set versus English (decoder direction → final norm → W_U); the top features each way
   traced to the layer's MLP neurons that write them (mean activation × write weight) →
   target neurons N_T and English neurons N_EN.

Every unknown of the paper's description is a field of `Foxp2Settings`. The result is plain
data (`Foxp2Analysis`, JSON-serialisable) that `steering.foxp2` turns into edits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import torch

import interp
from interp.corpora import language_token_sets
from interp.errors import InterpError

from .language_directions import Spectrum, bootstrap_stability, choose_window, difference_matrices, spectrum
from .sae_features import feature_lift, load_sae, token_activations, trace_neurons, train_sae


@dataclass
class Foxp2Settings:
    """Every choice the method leaves open, with the defaults used in the tests and the CLI."""

    target: str = "es"
    window: list[int] | None = None  # layers to intervene on; None = chosen from the spectra
    window_width: int | None = None  # None = a quarter of the layers
    max_depth: float = 0.9  # the window lies in the first max_depth of the layers
    bootstrap: int = 20  # resamples for the stability of the top directions
    max_rank: int = 8  # the eigengap looks at the first max_rank singular values
    sae_expansion: int = 4  # d_sae = expansion × d_model
    sae_k: int = 32  # active features per token (TopK)
    sae_steps: int = 300
    sae_batch: int = 256
    sae_lr: float = 1e-3
    seed: int = 0
    lift: str = "difference"  # or "log_ratio"
    min_usage: float = 1e-3  # a feature counts as live when it fires on at least this share of tokens
    top_features: int = 8  # features traced per language and layer
    neurons_per_feature: int = 4  # neurons traced per feature


@dataclass
class LayerFindings:
    """One window layer: the SAE's quality, the selected features and the traced neurons."""

    layer: int
    explained_variance: float
    live_features: int
    target_features: list[int]
    target_lift: list[float]
    english_features: list[int]
    english_lift: list[float]
    target_neurons: list[int]
    english_neurons: list[int]


@dataclass
class Foxp2Analysis:
    target: str
    settings: Foxp2Settings
    spectra: dict[int, Spectrum]  # every layer
    stability: dict[int, float]  # every layer
    window: list[int]
    layers: dict[int, LayerFindings] = field(default_factory=dict)  # window layers

    def summary(self) -> dict:
        """JSON-ready: settings, per-layer spectrum numbers, window, localisation."""
        return {
            "target": self.target,
            "settings": asdict(self.settings),
            "window": self.window,
            "spectra": {str(l): {"rank": sp.rank, "effective_rank": sp.effective_rank, "energy": sp.energy,
                                 "stability": self.stability[l], "singular": sp.singular[:16].tolist(),
                                 "mean_diff_norm": float(sp.mean_diff.norm())}
                        for l, sp in self.spectra.items()},
            "layers": {str(l): asdict(f) for l, f in self.layers.items()},
        }

    def table(self) -> str:
        """Per layer: rank, effective rank, energy, stability; window layers add the SAE and neuron counts."""
        rows = ["layer  k  eff.rank  energy  stable  window  SAE expl.var  live  N_T  N_EN"]
        for l, sp in self.spectra.items():
            f = self.layers.get(l)
            tail = (f"  {f.explained_variance:11.3f}  {f.live_features:4d}  {len(f.target_neurons):3d}  "
                    f"{len(f.english_neurons):4d}") if f else ""
            rows.append(f"{l:5d} {sp.rank:2d}  {sp.effective_rank:8.1f}  {sp.energy:6.3f}  {self.stability[l]:6.3f}  "
                        f"{'  *   ' if l in self.window else '      '}{tail}")
        return "\n".join(rows)


def spectra_and_window(model: interp.Model, target_texts: Sequence[str], english_texts: Sequence[str],
                       settings: Foxp2Settings) -> tuple[dict[int, Spectrum], dict[int, float], list[int]]:
    """Step 2: spectra and bootstrap stability of D_l for every layer, and the window."""
    D = difference_matrices(model, target_texts, english_texts)
    spectra = {l: spectrum(d, max_rank=settings.max_rank) for l, d in D.items()}
    stability = {l: bootstrap_stability(d, rank=spectra[l].rank, samples=settings.bootstrap, seed=settings.seed)
                 for l, d in D.items()}
    n = model.adapter.n_layers
    if settings.window is not None:
        window = sorted(set(settings.window))
        if not window or window[0] < 0 or window[-1] >= n:
            raise InterpError(f"the FOXP2 window {settings.window} must be non-empty layers in 0..{n - 1}")
    else:
        width = settings.window_width or max(1, round(n / 4))
        layers = sorted(spectra)
        window = choose_window([spectra[l].energy for l in layers], [stability[l] for l in layers],
                               max_depth=settings.max_depth, width=width)
    return spectra, stability, window


def localize(model: interp.Model, target_texts: Sequence[str], english_texts: Sequence[str],
             layers: Sequence[int], settings: Foxp2Settings,
             saes: Mapping[int, str] | None = None) -> dict[int, LayerFindings]:
    """Step 1 on each of `layers`: SAE, feature lift, top features → N_T and N_EN.

    saes: {layer: folder} of SAE-Lens SAEs on `blocks.L.hook_resid_post` to use instead of
    training one (scored on the same tokens)."""
    ids = language_token_sets(model.tokenizer, [settings.target, "en"])
    resid = {l: f"blocks.{l}.hook_resid_post" for l in layers}  # the SAEs' data
    mlp = {l: f"blocks.{l}.mlp.hook_post" for l in layers}  # the neurons traced to (their mean activations)
    acts_t = token_activations(model, target_texts, [*resid.values(), *mlp.values()])
    acts_en = token_activations(model, english_texts, [*resid.values(), *mlp.values()])
    g = torch.Generator().manual_seed(settings.seed)
    out = {}
    for l in layers:
        mean_t, mean_en = acts_t.pop(mlp[l]).mean(0), acts_en.pop(mlp[l]).mean(0)
        mixed = torch.cat([acts_t.pop(resid[l]), acts_en.pop(resid[l])])
        mixed = mixed[torch.randperm(mixed.shape[0], generator=g)]
        if saes and l in saes:
            trained = load_sae(saes[l], l, mixed[int(0.9 * mixed.shape[0]):])
        else:
            trained = train_sae(mixed, l, expansion=settings.sae_expansion, k=settings.sae_k,
                                steps=settings.sae_steps, batch_size=settings.sae_batch, lr=settings.sae_lr,
                                seed=settings.seed)
        usage = (trained.encode(mixed) > 0).float().mean(0)
        live = usage >= settings.min_usage
        if int(live.sum()) < 2 * settings.top_features:
            raise InterpError(f"layer {l}: only {int(live.sum())} live SAE features; train longer (sae_steps)")
        lift = feature_lift(model, trained.decoder, ids[settings.target], ids["en"], kind=settings.lift)
        ranked = torch.where(live, lift, torch.nan)
        t_feats = ranked.nan_to_num(-torch.inf).topk(settings.top_features).indices
        en_feats = (-ranked).nan_to_num(-torch.inf).topk(settings.top_features).indices
        t_neurons = trace_neurons(model, l, trained.decoder[t_feats], mean_t, top=settings.neurons_per_feature)
        en_neurons = trace_neurons(model, l, trained.decoder[en_feats], mean_en, top=settings.neurons_per_feature)
        en_neurons = [n for n in en_neurons if n not in set(t_neurons)]
        out[l] = LayerFindings(l, trained.explained_variance, int(live.sum()), t_feats.tolist(),
                               lift[t_feats].tolist(), en_feats.tolist(), lift[en_feats].tolist(), t_neurons,
                               en_neurons)
    return out


def analyze(model: interp.Model, texts: Mapping[str, Sequence[str]], settings: Foxp2Settings,
            *, localize_layers: bool = True, saes: Mapping[int, str] | None = None) -> Foxp2Analysis:
    """Steps 1–2 on parallel texts {"en": [...], target: [...]} (same length, aligned)."""
    if "en" not in texts or settings.target not in texts:
        raise InterpError(f"FOXP2 needs parallel English and {settings.target!r} texts")
    if settings.target == "en":
        raise InterpError("the FOXP2 target language must not be English")
    tgt, en = texts[settings.target], texts["en"]
    spectra, stability, window = spectra_and_window(model, tgt, en, settings)
    found = localize(model, tgt, en, window, settings, saes) if localize_layers else {}
    return Foxp2Analysis(settings.target, settings, spectra, stability, window, found)


def spectra_png(analysis: Foxp2Analysis) -> bytes:
    """Two panels per layer: normalised singular values (window layers highlighted) and the
    energy / stability / effective-rank profile over depth."""
    from interp.plotting import png, subplots

    fig, (a, b) = subplots(nrows=1, ncols=2, figsize=(11, 3.8), dpi=100)
    layers = sorted(analysis.spectra)
    for l in layers:
        s = analysis.spectra[l].singular[:10]
        inside = l in analysis.window
        a.plot(range(1, s.numel() + 1), (s / s[0]).tolist(), lw=1.6 if inside else 0.6,
               color="tab:red" if inside else "0.6", alpha=1.0 if inside else 0.6)
    a.set_xlabel("singular value index")
    a.set_ylabel("σ_i / σ_1 (red: window layers)")
    a.set_title(f"English → {analysis.target} difference spectra")
    b.plot(layers, [analysis.spectra[l].energy for l in layers], marker="o", ms=3, label="top-k energy")
    b.plot(layers, [analysis.stability[l] for l in layers], marker="s", ms=3, label="bootstrap stability")
    eff = [analysis.spectra[l].effective_rank for l in layers]
    b.plot(layers, [e / max(eff) for e in eff], marker="^", ms=3, label="effective rank / max")
    gap = [float(analysis.spectra[l].singular[0] / analysis.spectra[l].singular[1]) for l in layers]
    b.plot(layers, [g / max(gap) for g in gap], ls="--", label="σ1/σ2 / max")
    b.axvspan(min(analysis.window) - 0.5, max(analysis.window) + 0.5, color="tab:red", alpha=0.12)
    b.set_xlabel("layer")
    b.legend(fontsize=7)
    return png(fig)
