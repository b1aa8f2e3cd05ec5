"""English → target language directions per layer (Neural FOXP2, Saha et al. 2026; METHODS.md §D step 2).

For parallel texts (the same verse in English and in the target language),
D_l = [pool(h_l(x_T,i)) − pool(h_l(x_EN,i))]_i, [n_pairs, width]. Its SVD says
how one-dimensional the language shift is at layer l: the eigengap
g_k = σ_k − σ_{k+1} picks a rank k, the effective rank is exp(entropy of
σ / Σσ), and the top-k energy Σ_{i≤k} σ_i² / Σ σ² how much of the shift those
directions carry. Bootstrap resampling of the pairs measures how stable the
top-k subspace is. The intervention window is the low-to-mid run of layers
where energy × stability is high (every threshold is a setting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

import interp
from interp.batching import without_first
from interp.errors import InterpError


@dataclass
class Spectrum:
    """SVD summary of one layer's difference matrix D [n, width].

    singular [min(n, width)]; directions [k, width] (top right singular vectors, oriented
    along the mean difference); mean_diff [width] = d̄.
    """

    singular: torch.Tensor
    rank: int  # k from the largest eigengap (among the first `max_rank`)
    effective_rank: float
    energy: float  # Σ_{i≤k} σ_i² / Σ σ_i²
    directions: torch.Tensor
    mean_diff: torch.Tensor


@torch.inference_mode()
def difference_matrices(model: interp.Model, target: Sequence[str], english: Sequence[str], *,
                        site: str = "mlp.hook_post", layers: Sequence[int] | None = None,
                        skip_first: bool = True, batch_size: int = 8,
                        max_length: int = 128) -> dict[int, torch.Tensor]:
    """{layer: D [n_pairs, width]}: mean-pooled activations of target texts minus their English parallels.

    skip_first leaves each text's first token out of the pool: it is the attention sink, whose
    activations in some layers are hundreds of times larger than elsewhere (smollm2 layer 11:
    norm ~2800 against ~7) and would otherwise make d̄ a difference of sinks, not of languages.
    """
    if len(target) != len(english) or not target:
        raise InterpError(f"need the same number (> 0) of target and English texts, got {len(target)} and {len(english)}")
    layers = list(range(model.adapter.n_layers)) if layers is None else list(layers)
    sites = [f"blocks.{l}.{site}" for l in layers]

    def pooled(texts):
        out = {l: [] for l in layers}
        for s in range(0, len(texts), batch_size):
            batch = interp.tokenize(model.tokenizer, list(texts[s:s + batch_size]), max_length=max_length)
            cache = interp.run_with_cache(model, batch, sites)
            mask = without_first(batch.attention_mask) if skip_first else batch.attention_mask
            mask = mask.to(torch.float32)[:, :, None]
            for l, name in zip(layers, sites):
                x = cache[name].float().flatten(2)
                out[l].append((x * mask).sum(1) / mask.sum(1).clamp(min=1))
        return {l: torch.cat(v) for l, v in out.items()}

    t, e = pooled(target), pooled(english)
    return {l: t[l] - e[l] for l in layers}


def spectrum(D: torch.Tensor, *, max_rank: int = 8) -> Spectrum:
    """SVD of D [n, width] (not centred: the shared shift is the signal)."""
    D = D.double()
    _, S, Vh = torch.linalg.svd(D, full_matrices=False)
    m = min(max_rank, S.numel() - 1)
    gaps = S[:m] - S[1:m + 1]
    k = int(gaps.argmax()) + 1 if m > 0 else 1
    p = S / S.sum().clamp(min=1e-30)
    eff = float(torch.exp(-(p * p.clamp(min=1e-30).log()).sum()))
    energy = float((S[:k] ** 2).sum() / (S ** 2).sum().clamp(min=1e-30))
    d_bar = D.mean(0)
    dirs = Vh[:k]
    dirs = dirs * torch.where(dirs @ d_bar < 0, -1.0, 1.0).to(dirs.dtype)[:, None]  # point along d̄
    return Spectrum(S.float(), k, eff, energy, dirs.float(), d_bar.float())


def subspace_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between row spaces of a [k, w] and b [k', w] (1 = same)."""
    qa, _ = torch.linalg.qr(a.double().T)
    qb, _ = torch.linalg.qr(b.double().T)
    s = torch.linalg.svdvals(qa.T @ qb)
    return float((s ** 2).sum() / min(qa.shape[1], qb.shape[1]))


def bootstrap_stability(D: torch.Tensor, *, rank: int | None = None, samples: int = 20, seed: int = 0) -> float:
    """Mean similarity between the top-k subspace of D and of D's rows resampled with replacement."""
    g = torch.Generator().manual_seed(seed)
    full = spectrum(D)
    k = rank or full.rank
    _, _, vh = torch.linalg.svd(D.double(), full_matrices=False)
    ref = vh[:k]
    sims = []
    for _ in range(samples):
        idx = torch.randint(D.shape[0], (D.shape[0],), generator=g)
        _, _, vb = torch.linalg.svd(D[idx].double(), full_matrices=False)
        sims.append(subspace_similarity(ref, vb[:k]))
    return sum(sims) / len(sims)


def choose_window(energy: Sequence[float], stability: Sequence[float], *, max_depth: float = 0.67,
                  keep: float = 0.8, width: int | None = None) -> list[int]:
    """Layers to intervene on, among the first `max_depth` of the layers, scored by energy × stability.

    Without `width`: the run around the best layer of layers scoring at least `keep` × the best.
    With `width`: the run of `width` consecutive layers with the highest mean score (a fixed-size
    window, for models whose spectra are flat across depth).
    """
    if len(energy) != len(stability) or not energy:
        raise InterpError("energy and stability need one value per layer")
    n = max(1, round(max_depth * len(energy)))
    score = [e * s for e, s in zip(energy[:n], stability[:n])]
    if width is not None:
        if width < 1:
            raise InterpError(f"window width must be at least 1, not {width}")
        width = min(width, n)
        start = max(range(n - width + 1), key=lambda i: sum(score[i:i + width]))
        return list(range(start, start + width))
    best = max(range(n), key=score.__getitem__)
    lo = hi = best
    while lo > 0 and score[lo - 1] >= keep * score[best]:
        lo -= 1
    while hi < n - 1 and score[hi + 1] >= keep * score[best]:
        hi += 1
    return list(range(lo, hi + 1))


def spectra_png(spectra: dict[int, Spectrum], *, top: int = 10) -> bytes:
    """Normalised singular values per layer (the first `top`), one line per layer."""
    import matplotlib

    from interp.plotting import png, subplots

    fig, ax = subplots(figsize=(7, 3.5), dpi=100)
    colours = matplotlib.colormaps["viridis"]
    for l, sp in spectra.items():
        s = sp.singular[:top]
        ax.plot(range(1, s.numel() + 1), (s / s[0]).tolist(), marker="o", ms=2, lw=1, label=f"L{l}",
                color=colours(l / max(1, max(spectra))))
    ax.set_xlabel("singular value index")
    ax.set_ylabel("σ_i / σ_1")
    ax.legend(fontsize=6, ncol=3)
    return png(fig)
