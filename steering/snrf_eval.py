"""Tables for the shared-neuron causal probes: amplification and SNRF against their controls.

Both take `answers(edits) -> list[str]` (the model's answers to a fixed question set with
`edits` applied) and the reference answers, so they work for any model and task; the VLM
testbed provides them for its tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from .snrf import SnrfSettings, amplify, full_delta_edits, random_like, snrf_edits

Answers = Callable[[Sequence], list[str]]


def accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    return sum(p.strip() == g.strip() for p, g in zip(predicted, gold, strict=True)) / max(len(gold), 1)


def changed(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """Share of answers that differ from the reference answers."""
    return sum(p.strip() != r.strip() for p, r in zip(predicted, reference, strict=True)) / max(len(reference), 1)


@dataclass
class AmplificationRow:
    alpha: float
    units: str  # "shared" or "random (seed k)"
    changed: float
    accuracy: float


@dataclass
class AmplificationTable:
    base_accuracy: float
    n_units: int
    rows: list[AmplificationRow] = field(default_factory=list)

    def mean(self, alpha: float, units: str) -> tuple[float, float]:
        rows = [r for r in self.rows if r.alpha == alpha and r.units.startswith(units)]
        return (sum(r.changed for r in rows) / len(rows), sum(r.accuracy for r in rows) / len(rows))

    def text(self) -> str:
        lines = [f"amplification of {self.n_units} shared units (unamplified accuracy {self.base_accuracy:.3f})",
                 f"{'alpha':>6s} {'units':>10s} {'answers changed':>16s} {'accuracy':>9s}"]
        for alpha in sorted({r.alpha for r in self.rows}):
            for units in ("shared", "random"):
                c, a = self.mean(alpha, units)
                lines.append(f"{alpha:6.2f} {units:>10s} {c:16.3f} {a:9.3f}")
        return "\n".join(lines)


def amplification_table(answers: Answers, gold: Sequence[str], shared: Mapping[str, Mapping[int, torch.Tensor]],
                        alphas: Sequence[float] = (1.5, 2.0, 3.0), n_random: int = 3) -> AmplificationTable:
    """Answers with the shared units × α against random units of the same counts (mean over `n_random` draws)."""
    base = answers([])
    n_units = sum(int(m.sum()) for module in ("up", "o") for m in shared.get(module, {}).values())
    table = AmplificationTable(accuracy(base, gold), n_units)
    for alpha in alphas:
        out = answers(amplify(shared, alpha))
        table.rows.append(AmplificationRow(alpha, "shared", changed(out, base), accuracy(out, gold)))
        for k in range(n_random):
            out = answers(amplify(random_like(shared, seed=k), alpha))
            table.rows.append(AmplificationRow(alpha, f"random (seed {k})", changed(out, base), accuracy(out, gold)))
    return table


@dataclass
class SnrfTable:
    """Accuracy per task for each variant: {variant: {task: accuracy}}."""

    accuracy: dict[str, dict[str, float]]

    def text(self) -> str:
        tasks = list(next(iter(self.accuracy.values())))
        lines = [f"{'variant':28s} " + " ".join(f"{t:>10s}" for t in tasks)]
        for name, acc in self.accuracy.items():
            lines.append(f"{name:28s} " + " ".join(f"{acc[t]:10.3f}" for t in tasks))
        return "\n".join(lines)


def snrf_table(vlm, llm, shared: Mapping[str, Mapping[int, torch.Tensor]],
               evaluate: Callable[[Sequence], dict[str, float]], settings: SnrfSettings | None = None,
               n_random: int = 1) -> SnrfTable:
    """Base VLM; SNRF on the shared units; the full delta β·ΔW on every row and column (no truncation, the
    merge SNRF is compared with); and SNRF's rank-r delta on random units of the same counts."""
    settings = settings or SnrfSettings()
    rows = {"base VLM": evaluate([]),
            f"SNRF (r={settings.rank}, β={settings.beta:g})": evaluate(snrf_edits(vlm, llm, shared, settings)),
            f"full delta (β={settings.beta:g})": evaluate(full_delta_edits(
                vlm, llm, SnrfSettings(rank=None, beta=settings.beta, modules=settings.modules)))}
    for k in range(n_random):
        rows[f"random units (seed {k})"] = evaluate(snrf_edits(vlm, llm, random_like(shared, seed=k), settings))
    return SnrfTable(rows)
