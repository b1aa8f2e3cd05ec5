"""HFTP from model to result: stimuli → word series → two-stage test, plus the six RSA conditions.

`run_hftp` builds the experiment and control streams, captures every site once per stream,
and tests the sentence and phrase rates. `condition_spectra` gives the model's amplitude
spectra for the six RSA conditions (Sentence, Phrase, Random × 2 blocks, block 2 from other
sentences) for `brain.model_brain_rsa`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

import interp
from interp.paper import PaperSettings, differs

from .brain import CONDITIONS
from .probe import HftpResult, amplitude, frequencies, hftp_test, word_series
from .stimuli import control, experiment, phrases, random_words


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


def run_hftp(model: interp.Model, settings: HftpSettings, sites: Sequence[str] | None = None) -> HftpResult:
    """The probe on sentence streams against their word-shuffled control."""
    sites = list(sites or model.adapter.expand(settings.site))
    kw = dict(n_sentences=settings.n_sentences, n_streams=settings.n_streams, seed=settings.seed)
    exp, ctl = experiment(settings.lang, **kw), control(settings.lang, **kw)
    e = word_series(model, exp, sites, n_groups=settings.n_groups)
    c = word_series(model, ctl, sites, n_groups=settings.n_groups)
    null = None
    if settings.null_control:
        other = control(settings.lang, **kw, shuffle_seed=settings.seed + 7919)
        null = word_series(model, other, sites, n_groups=settings.n_groups)
    return hftp_test(e, c, exp.rates, n_perm=settings.n_perm, alpha=settings.alpha, z=settings.z, seed=settings.seed,
                     null=null)


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
