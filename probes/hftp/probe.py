"""The HFTP probe (An et al. 2025; METHODS.md §E steps 2–4): which neurons follow syntax in time.

1. Word-rate series: each stream goes through the model once; at each site a neuron's
   activations are averaged over each word's tokens → one sample per word (4 Hz). Streams
   are averaged within groups (`n_groups` groups of consecutive streams): [G, T, N].
2. Spectra: A(f) = |rFFT| over the T samples, DC set to 0; f in Hz at WORD_RATE.
3. Stage 1, per neuron and tagged rate: the group-averaged experiment series keeps its
   amplitude above the `1 − alpha` quantile of `n_perm` random time permutations.
4. Stage 2: diff = mean_g A_exp − mean_g A_ctrl at the rate; neurons failing stage 1 get 0;
   z-scored over every site × neuron (or against a second control's differences, `null`);
   z > `z` among the stage-1 passers is significant. Labels: sentence-only, phrase-only, shared.

The permutation test needs the amplitude at one frequency only, so each permutation is
applied to the complex exponential instead of the data: |e[π] · x| for all neurons at once,
one matrix product per chunk of permutations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

import interp
from interp.batching import pool_words
from interp.errors import InterpError

from .stimuli import WORD_RATE, Condition

LABELS = ("sentence-only", "phrase-only", "shared")


@torch.inference_mode()
def word_series(model: interp.Model, condition: Condition, sites: Sequence[str], *, n_groups: int = 10,
                batch_size: int = 4) -> dict[str, torch.Tensor]:
    """{site: [n_groups, n_words, width]}: per-word mean activations, averaged over each group's streams."""
    n = len(condition.streams)
    if n % n_groups:
        raise InterpError(f"{n} streams do not split into {n_groups} equal groups")
    per_group = n // n_groups
    T = condition.n_words
    out: dict[str, torch.Tensor] = {}
    for s in range(0, n, batch_size):
        texts = [" ".join(words) for words in condition.streams[s:s + batch_size]]
        batch = interp.tokenize(model.tokenizer, texts, words=True, max_length=8 * T)
        cache = interp.run_with_cache(model, batch, list(sites))
        for site in sites:
            acts = cache[site].float().flatten(2).cpu()  # [b, seq, width]
            for i in range(acts.shape[0]):
                ids = batch.word_ids[i]
                if int(ids.max()) + 1 != T:
                    raise InterpError(f"stream {s + i} lost words in tokenisation ({int(ids.max()) + 1} of {T})")
                g = (s + i) // per_group
                if site not in out:
                    out[site] = torch.zeros(n_groups, T, acts.shape[-1])
                out[site][g] += pool_words(acts[i], ids, T) / per_group
    return out


def amplitude(series: torch.Tensor) -> torch.Tensor:
    """|rFFT| over the time axis (dim −2) with DC zeroed: [..., T, N] → [..., T // 2 + 1, N]."""
    a = torch.fft.rfft(series.double(), dim=-2).abs()
    a[..., 0, :] = 0.0
    return a.float()


def frequencies(n_words: int) -> torch.Tensor:
    """The rFFT bin frequencies in Hz for `n_words` samples at WORD_RATE."""
    return torch.fft.rfftfreq(n_words, d=1.0 / WORD_RATE)


def _bin(n_words: int, rate: float) -> int:
    f = frequencies(n_words)
    k = int(torch.argmin((f - rate).abs()))
    if abs(float(f[k]) - rate) > 1e-6:
        raise InterpError(f"{rate} Hz is not a frequency bin of {n_words} words at {WORD_RATE} Hz; "
                          "use a multiple of the sentence length")
    return k


def permutation_pass(series: torch.Tensor, rate: float, *, n_perm: int = 1000, alpha: float = 0.05,
                     seed: int = 0, chunk: int = 100) -> torch.Tensor:
    """Stage 1 for one mean series [T, N]: amplitude at `rate` above the (1 − alpha) quantile of
    `n_perm` time permutations → bool [N]."""
    T = series.shape[0]
    k = _bin(T, rate)
    t = torch.arange(T, dtype=torch.float64)
    e = torch.exp(-2j * torch.pi * k * t / T)  # [T]
    x = series.to(torch.complex128)
    real = (e @ x).abs()  # [N]
    g = torch.Generator().manual_seed(seed)
    perms = []
    for s in range(0, n_perm, chunk):
        m = min(chunk, n_perm - s)
        idx = torch.argsort(torch.rand(m, T, generator=g), dim=1)
        perms.append((e[idx] @ x).abs())  # [m, N]
    null = torch.cat(perms)
    return real > torch.quantile(null.float(), 1 - alpha, dim=0).double()


@dataclass
class HftpResult:
    """Per site: significant neurons at each rate, their z, and the labels."""

    rates: dict[str, float]
    z: dict[str, dict[str, torch.Tensor]]  # rate name → site → [N]
    significant: dict[str, dict[str, torch.Tensor]]  # rate name → site → bool [N]
    spectra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # condition → site → [F, N] (mean)

    def labels(self, site: str) -> dict[str, torch.Tensor]:
        """{label: bool [N]} for sentence-only, phrase-only and shared (rate "sentence", and "phrase" or, for
        natural n-word sentences, any of "phrase2" … "phrase{n−1}")."""
        s = self.significant["sentence"][site]
        p = torch.zeros_like(s)
        for name in self.rates:
            if name.startswith("phrase"):
                p = p | self.significant[name][site]
        return {"sentence-only": s & ~p, "phrase-only": p & ~s, "shared": s & p}

    def counts(self) -> dict[str, dict[str, int]]:
        """{site: {label: count}}."""
        sites = list(self.significant["sentence"])
        return {site: {k: int(v.sum()) for k, v in self.labels(site).items()} for site in sites}

    def any_rate(self, sites: Sequence[str]) -> torch.Tensor:
        """Neurons significant at any rate, over `sites`' neurons concatenated in order: bool [Σ width]."""
        return torch.cat([torch.stack([self.significant[r][s] for r in self.rates]).any(0) for s in sites])

    def top(self, sites: Sequence[str], n: int) -> torch.Tensor:
        """The `n` significant neurons (at any rate) with the highest z, as a mask over `sites`'
        neurons concatenated in order: bool [Σ width]."""
        significant = self.any_rate(sites)
        score = torch.cat([torch.stack([self.z[r][s] for r in self.rates]).amax(0) for s in sites])
        score = torch.where(significant, score, torch.full_like(score, -torch.inf))
        mask = torch.zeros_like(significant)
        mask[score.topk(min(n, int(significant.sum()))).indices] = True
        return mask

    def table(self) -> str:
        rows = [f"{'site':28s} " + " ".join(f"{l:>13s}" for l in LABELS)]
        for site, c in self.counts().items():
            rows.append(f"{site:28s} " + " ".join(f"{c[l]:13d}" for l in LABELS))
        return "\n".join(rows)


def hftp_test(experiment: Mapping[str, torch.Tensor], control: Mapping[str, torch.Tensor],
              rates: Mapping[str, float], *, n_perm: int = 1000, alpha: float = 0.05, z: float = 2.0,
              seed: int = 0, null: Mapping[str, torch.Tensor] | None = None) -> HftpResult:
    """Both stages on group-averaged series {site: [G, T, N]} of the experiment and the control.

    null: series of a second, independent control. Without it (the paper), stage 2 z-scores the
    experiment − control differences against their own distribution, which marks the top few
    per cent whether or not there is any effect (a shuffled control in the experiment's place
    gets as many "syntax neurons"). With it, the z-scores use the mean and spread of
    null − control differences (stage 1 applied to the null series), so z > 2 means beyond
    what two controls differ by.
    """
    if set(experiment) != set(control) or not experiment or (null is not None and set(null) != set(control)):
        raise InterpError("experiment, control (and null) need the same, non-empty sites")
    sites = list(experiment)
    series = {"experiment": experiment, "control": control, **({"null": null} if null is not None else {})}
    spectra = {cond: {site: amplitude(x[site]).mean(0) for site in sites} for cond, x in series.items()}

    def passed_diffs(cond: str, rate: float) -> dict[str, torch.Tensor]:
        """Amplitude at `rate` minus the control's, 0 where stage 1 fails: {site: [N]}."""
        out = {}
        for site in sites:
            k = _bin(series[cond][site].shape[1], rate)
            ok = permutation_pass(series[cond][site].mean(0), rate, n_perm=n_perm, alpha=alpha, seed=seed)
            d = (spectra[cond][site][k] - spectra["control"][site][k]).double()
            out[site] = torch.where(ok, d, torch.zeros_like(d))
        return out

    zs, sig = {}, {}
    for name, rate in rates.items():
        diffs = passed_diffs("experiment", rate)
        ref = torch.cat(list((passed_diffs("null", rate) if null is not None else diffs).values()))
        mu, sd = ref.mean(), ref.std().clamp(min=1e-12)
        zs[name] = {site: ((d - mu) / sd).float() for site, d in diffs.items()}
        sig[name] = {site: (zs[name][site] > z) & (diffs[site] != 0) for site in sites}
    spectra.pop("null", None)
    return HftpResult(dict(rates), zs, sig, spectra)
