"""Language neurons (Zhang et al. 2025; LAPE, Tang et al. 2024; METHODS.md §A).

Input: per language k, how many tokens made each neuron fire (act(gate) > 0,
i.e. `mlp.hook_pre` > 0 for SiLU/GELU gates), [K, layers, d_mlp], and the token
counts [K] — from `language_counts` (the capture engine) or from saved counts
(full texts and instruction prefixes, as the paper's public data).

- `identify`: the paper's three-way classification. Activation probabilities
  p, normalised entropy over languages minus λ · max_k p / c_K, keep the ρ
  lowest scores, assign languages by p_k > τ (the 95th percentile of all p):
  one language = language-specific, 2 … K−1 = language-related; over all
  neurons, p_k > τ for every k = language-agnostic. λ by bisection: the
  largest λ for which no selected neuron fires for every language.
- `lape`: the LAPE baseline (natural-log entropy, not normalised; neurons
  with no p_k above τ excluded; the ρ lowest entropies).
- `layer_distribution`, `phases`: where each category lives, and the paper's
  four phases read off it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from interp.errors import InterpError
from interp.paper import PaperSettings, differs

RHO = 0.01
PERCENTILE = 0.95


@dataclass(frozen=True)
class LanguageNeuronSettings(PaperSettings):
    """Choices of `interp analyze --probe language-neurons` where ours differ from the paper's public code."""

    full_at: int | None = differs(
        None, paper=10,
        why="the λ bisection must keep out neurons of every language (c = K); the public code checks position 10 "
            "of the count by c, i.e. hard-codes K = 10 (METHODS.md §A.6); None: K",
        effect="none at K = 10 (the paper's setting); for K < 10 no neuron has c = 10, so the check never fires "
               "and λ runs to the top of [0, 0.2]")
    answer_counts: str = differs(
        "mask", paper="subtract",
        why="answer-only counts (--answers) from one run with the prompt masked, not full minus prefix from two "
            "runs (half the compute; no count against prompt tokens that the full text tokenizes differently)",
        effect="equal counts when the prompt tokenizes alone as inside the full text (tested on smollm2-135m); "
               "differs only at tokens straddling the prompt/answer boundary")


@dataclass
class LanguageCounts:
    """counts [K, layers, d_mlp] int64: tokens with act > 0; tokens [K] int64. Optional prefix runs alike."""

    langs: list[str]
    counts: torch.Tensor
    tokens: torch.Tensor
    prefix_counts: torch.Tensor | None = None
    prefix_tokens: torch.Tensor | None = None

    def __post_init__(self) -> None:
        K = len(self.langs)
        if K < 2:
            raise InterpError(f"language neurons need at least 2 languages, got {self.langs}")
        if self.counts.dim() != 3 or self.counts.shape[0] != K or self.tokens.shape != (K,):
            raise InterpError(f"counts must be [K={K}, layers, d_mlp] with tokens [K]; got "
                              f"{tuple(self.counts.shape)} and {tuple(self.tokens.shape)}")
        if (self.prefix_counts is None) != (self.prefix_tokens is None):
            raise InterpError("give both prefix_counts and prefix_tokens, or neither")

    def probabilities(self) -> torch.Tensor:
        """p [K, layers, d_mlp] (float32): C / T, or on answers only max(0, C − C_prefix) / max(1, T − T_prefix)."""
        c, t = self.counts.float(), self.tokens.float()
        if self.prefix_counts is not None:
            c = (c - self.prefix_counts.float()).clamp(min=0)
            t = (t - self.prefix_tokens.float()).clamp(min=1)
        else:
            t = t.clamp(min=1)
        return c / t[:, None, None]


@dataclass
class LanguageNeurons:
    """Result of an identification.

    masks [K, layers, d_mlp] bool: neuron of language k (selected and p_k > τ);
    n_langs [layers, d_mlp]: languages per selected neuron (-1 where not selected);
    agnostic [layers, d_mlp] bool: p_k > τ for every k, over all neurons.
    """

    method: str
    langs: list[str]
    masks: torch.Tensor
    selected: torch.Tensor
    n_langs: torch.Tensor
    agnostic: torch.Tensor
    tau: float
    lam: float | None = None
    lambda_path: list[float] = field(default_factory=list)

    @property
    def specific(self) -> torch.Tensor:
        """[layers, d_mlp] bool: selected neurons of exactly one language."""
        return self.n_langs == 1

    @property
    def related(self) -> torch.Tensor:
        """[layers, d_mlp] bool: selected neurons of 2 … K−1 languages."""
        return (self.n_langs >= 2) & (self.n_langs <= len(self.langs) - 1)

    def count_by_languages(self) -> list[int]:
        """Selected neurons by number of languages c = 0 … K."""
        K = len(self.langs)
        c = self.n_langs[self.selected]
        return [int((c == i).sum()) for i in range(K + 1)]

    def per_language(self) -> dict[str, int]:
        return {lang: int(self.masks[k].sum()) for k, lang in enumerate(self.langs)}

    def neurons(self, lang: str) -> dict[int, list[int]]:
        """{layer: [neuron, …]} of one language."""
        if lang not in self.langs:
            raise InterpError(f"no language {lang!r}; have {', '.join(self.langs)}")
        m = self.masks[self.langs.index(lang)]
        return {l: m[l].nonzero().flatten().tolist() for l in range(m.shape[0]) if m[l].any()}


def threshold(p: torch.Tensor, percentile: float = PERCENTILE) -> float:
    """τ: the value at position round(percentile · numel) − 1 of all p sorted ascending."""
    flat = p.flatten().sort().values
    return float(flat[round(percentile * flat.numel()) - 1])


def normalised_entropy(p: torch.Tensor) -> torch.Tensor:
    """H̃ [layers, d_mlp] of q = p / Σ_k p (uniform where Σ = 0; clamped at 1e-12 and renormalised)."""
    K = p.shape[0]
    total = p.sum(0, keepdim=True)
    q = torch.where(total > 0, p / total.clamp(min=torch.finfo(p.dtype).tiny), torch.full_like(p, 1.0 / K))
    q = q.clamp(min=1e-12)
    q = q / q.sum(0, keepdim=True)
    return -(q * q.log()).sum(0) / torch.log(torch.tensor(float(K), dtype=p.dtype))


def _select(score: torch.Tensor, rho: float) -> torch.Tensor:
    """[layers, d_mlp] bool: the round(ρ · numel) lowest scores."""
    n = round(rho * score.numel())
    idx = score.flatten().topk(n, largest=False).indices
    out = torch.zeros(score.numel(), dtype=torch.bool)
    out[idx] = True
    return out.view_as(score)


def _classify(method: str, langs, p, selected, tau, lam=None, path=()) -> LanguageNeurons:
    above = p > tau  # [K, layers, d_mlp]
    masks = above & selected
    n_langs = torch.where(selected, above.sum(0), torch.full_like(selected, -1, dtype=torch.int64))
    return LanguageNeurons(method, list(langs), masks, selected, n_langs, above.all(0), tau, lam, list(path))


def identify(counts: LanguageCounts, *, lam: float | None = None, rho: float = RHO, lo: float = 0.0,
             hi: float = 0.2, tol: float = 1e-3, full_at: int | None = None) -> LanguageNeurons:
    """The paper's method; λ given, or found by bisection on [lo, hi] (see module docstring).

    full_at: the bisection keeps out selected neurons of exactly this many languages (None: K, every
    language; the public code's hard-coded 10 is `LanguageNeuronSettings.paper().full_at`)."""
    p = counts.probabilities()
    K = p.shape[0]
    tau = threshold(p)
    entropy = normalised_entropy(p)
    c_k = sum(1.0 / j for j in range(1, K + 1)) / K
    peak = p.max(0).values / c_k
    above_all = (p > tau).sum(0) == (K if full_at is None else full_at)

    def select(l):
        return _select(entropy - l * peak, rho)

    path = []
    if lam is None:
        lam = lo  # the last λ that was fine
        while hi - lo > tol:
            mid = (lo + hi) / 2
            path.append(mid)
            if not (select(mid) & above_all).any():
                lo = lam = mid
            else:
                hi = mid
    return _classify("zhang2025", counts.langs, p, select(lam), tau, lam, path)


def lape(counts: LanguageCounts, *, rho: float = RHO) -> LanguageNeurons:
    """LAPE: natural-log entropy of q (not normalised); neurons with no p_k > τ are never selected."""
    p = counts.probabilities()
    tau = threshold(p)
    K = p.shape[0]
    entropy = normalised_entropy(p) * torch.log(torch.tensor(float(K)))
    entropy = torch.where((p > tau).any(0), entropy, torch.full_like(entropy, torch.inf))
    return _classify("lape", counts.langs, p, _select(entropy, rho), tau)


# ---------------------------------------------------------------- where they live


def layer_distribution(result: LanguageNeurons) -> dict[str, list[int]]:
    """Per layer: counts of language-specific, language-related and language-agnostic neurons."""
    return {"specific": result.specific.sum(1).tolist(), "related": result.related.sum(1).tolist(),
            "agnostic": result.agnostic.sum(1).tolist()}


def phases(result: LanguageNeurons) -> dict[str, list[int]]:
    """The paper's four phases read off the layer distribution (the most sensible reading, METHODS.md §A.8).

    With n = specific + related neurons per layer and a = agnostic neurons per layer:
    `shared reasoning` is the longest run of layers where n is below half its mean
    (language-specific neurons all but absent); `understanding` the layers before it;
    `vocabulary output` the final run of layers where a is above its mean (at least
    the last layer); `output transformation` what lies between. On the published
    Mistral-7B counts: 0–3, 4–17, 18–29, 30–31.
    """
    dist = layer_distribution(result)
    n = [a + b for a, b in zip(dist["specific"], dist["related"])]
    agn = dist["agnostic"]
    L = len(n)
    low = [x < 0.5 * sum(n) / L for x in n]
    best, start = (0, 0), None  # longest run of low layers: [best[0], best[1])
    for l in range(L + 1):
        if l < L and low[l]:
            start = l if start is None else start
        elif start is not None:
            best = max(best, (start, l), key=lambda r: r[1] - r[0])
            start = None
    end = L - 1
    while end > best[1] and agn[end - 1] > sum(agn) / L:
        end -= 1
    r0, r1 = best if best[1] > best[0] else (0, 0)
    return {"understanding": list(range(0, r0)), "shared reasoning": list(range(r0, r1)),
            "output transformation": list(range(r1, end)), "vocabulary output": list(range(end, L))}


def random_like(result: LanguageNeurons, lang: str, *, seed: int = 0) -> dict[int, list[int]]:
    """As many random neurons per layer as `lang` has there (a control for ablations)."""
    g = torch.Generator().manual_seed(seed)
    d_mlp = result.masks.shape[2]
    return {l: torch.randperm(d_mlp, generator=g)[: len(ns)].sort().values.tolist()
            for l, ns in result.neurons(lang).items()}


def counts_from_reducer(freq, langs: Sequence[str], sites: Sequence[str]) -> LanguageCounts:
    """A LanguageCounts from an `interp.ActivationFrequency` run with groups = langs over per-layer sites."""
    order = [freq.groups.index(lang) for lang in langs]
    counts = torch.stack([freq.state[s]["counts"][order] for s in sites], dim=1)  # [K, layers, d_mlp]
    tokens = freq.state[sites[0]]["tokens"][order]
    return LanguageCounts(list(langs), counts, tokens)
