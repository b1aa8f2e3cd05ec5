"""HFTP from model to result: stimuli → word series → two-stage test, plus the six RSA conditions.

`run_hftp` builds the experiment and control streams, captures every site once per stream,
and tests the sentence and phrase rates (four-word sentences, or natural n-word sentences cut
from a corpus with `natural`: sentence rate 4/n Hz, phrase rates 4/k Hz, k = 2 … n − 1).
`condition_spectra` gives the model's amplitude spectra for the six RSA conditions (Sentence,
Phrase, Random × 2 blocks, block 2 from other sentences) for `brain.model_brain_rsa`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

import interp
from interp.errors import InterpError
from interp.paper import PaperSettings, differs

from .brain import CONDITIONS
from .probe import HftpResult, amplitude, frequencies, hftp_test, word_series
from .stimuli import control, experiment, natural, natural_control, phrases, random_words


@dataclass
class HftpSettings(PaperSettings):
    lang: str = "en"
    site: str = "mlp.hook_post"  # per-layer site names or full names (adapter.expand)
    n_sentences: int = 60  # per stream: 4 × n_sentences words
    n_streams: int = 100
    n_groups: int = 10
    n_perm: int = 1000
    alpha: float = 0.05
    z: float = 2.0
    seed: int = 0
    null_control: bool = differs(  # z against a second independent control (False: the paper's self z-score)
        True, paper=False, why="the self z-score marks the top few per cent of neurons whether or not there is an "
        "effect", effect="smollm2: 1,285 neurons for sentences and 1,235 for a shuffled control (paper); 44,804 vs "
        "1,092 against an independent control (ours)")
    rsa_center: bool = differs(  # RSA: centre (and scale) each unit over the conditions before the cosine distance
        True, paper=False, why="raw amplitude and ITPC spectra share a large positive baseline: every pair of "
        "conditions looks alike and a few units with huge activations (the attention-sink ones) set the ranks",
        effect="not measured on real recordings")
    natural: int | None = None  # n: natural n-word sentences from `corpus` instead of the four-word ones
    corpus: str | None = None  # natural sentences' corpus spec (interp.corpora.load_corpus; None: bible:{lang})


def run_hftp(model: interp.Model, settings: HftpSettings, sites: Sequence[str] | None = None) -> HftpResult:
    """The probe on sentence streams against their word-shuffled control."""
    sites = list(sites or model.adapter.expand(settings.site))
    kw = dict(n_sentences=settings.n_sentences, n_streams=settings.n_streams, seed=settings.seed)
    if settings.natural:
        texts = natural_texts(settings)
        make_exp = lambda: natural(texts, settings.natural, **kw)  # noqa: E731
        make_ctl = lambda **k: natural_control(texts, settings.natural, **kw, **k)  # noqa: E731
    else:
        make_exp = lambda: experiment(settings.lang, **kw)  # noqa: E731
        make_ctl = lambda **k: control(settings.lang, **kw, **k)  # noqa: E731
    exp, ctl = make_exp(), make_ctl()
    e = word_series(model, exp, sites, n_groups=settings.n_groups)
    c = word_series(model, ctl, sites, n_groups=settings.n_groups)
    null = None
    if settings.null_control:
        other = make_ctl(shuffle_seed=settings.seed + 7919)
        null = word_series(model, other, sites, n_groups=settings.n_groups)
    return hftp_test(e, c, exp.rates, n_perm=settings.n_perm, alpha=settings.alpha, z=settings.z, seed=settings.seed,
                     null=null)


def natural_texts(settings: HftpSettings) -> list[str]:
    """The texts natural sentences are cut from: `settings.corpus`, or the Bible in `settings.lang`."""
    from interp.corpora import load_corpus

    return [d.text for d in load_corpus(settings.corpus or f"bible:{settings.lang}")]


def check_natural(n: int, n_sentences: int) -> None:
    """Every tagged rate of n-word sentences must be a frequency bin of the stream (n · n_sentences words)."""
    if n < 2:
        raise InterpError(f"natural sentences need n ≥ 2 words, not {n}")
    step = _lcm(range(2, n + 1)) // math.gcd(_lcm(range(2, n + 1)), n)  # the fewest sentences that work
    if n_sentences % step:
        raise InterpError(f"{n_sentences} sentences of {n} words: {n * n_sentences} words have no frequency bin at "
                          f"every rate 4/k Hz (k = 2 … {n}); use a number of sentences that is a multiple of {step}")


def _lcm(values) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


def condition_spectra(model: interp.Model, settings: HftpSettings, sites: Sequence[str],
                      n_streams: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Per RSA condition (CONDITIONS order) the mean amplitude spectrum [F, n_units] over all `sites`
    (units concatenated in site order), and the frequencies (Hz)."""
    n = n_streams or settings.n_groups
    words = 4 * settings.n_sentences
    out = []
    for cond in CONDITIONS:
        kind, block = cond.split("/")
        seed = settings.seed + 1000 * int(block)
        stim = {"Sentence": lambda: experiment(settings.lang, settings.n_sentences, n, seed),
                "Phrase": lambda: phrases(settings.lang, 2 * settings.n_sentences, n, seed),
                "Random": lambda: random_words(settings.lang, words, n, seed)}[kind]()
        series = word_series(model, stim, sites, n_groups=1)
        out.append(torch.cat([amplitude(series[s]).mean(0) for s in sites], dim=1).numpy())
    return out, frequencies(words).numpy()


def summary(result: HftpResult, settings: HftpSettings) -> dict:
    return {"settings": asdict(settings), "rates": result.rates, "counts": result.counts()}
