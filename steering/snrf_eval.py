"""Tables for the shared-neuron causal probes: amplification and SNRF against their controls, as sweeps of the
evaluation harness (`steering.evaluate`) whose "layers" are unit sets or variants.

Both work for any model and task: amplification takes `answers(edits) -> list[str]` (the model's answers to a
fixed question set with `edits` applied) and the gold answers; SNRF takes, per task, `correct(edits) -> [bool]`
(whether each of the task's questions is answered right with `edits` applied). The VLM testbed provides both.
What is this module's own: the unit sets and variants, and the tables' layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from .evaluate import Changed, Effect, ExactMatch, sweep
from .snrf import SnrfSettings, amplify, full_delta_edits, random_like, snrf_edits

Answers = Callable[[Sequence], list[str]]
Correct = Callable[[Sequence], Sequence[bool]]


def accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    return sum(p.strip() == g.strip() for p, g in zip(predicted, gold, strict=True)) / max(len(gold), 1)


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
    """Answers with the shared units × α against random units of the same counts (mean over `n_random` draws):
    one sweep over unit sets × α, scoring accuracy and the share of answers that changed from the unamplified ones."""
    base = answers([])
    n_units = sum(int(m.sum()) for module in ("up", "o") for m in shared.get(module, {}).values())
    units = {"shared": shared, **{f"random (seed {k})": random_like(shared, seed=k) for k in range(n_random)}}
    result = sweep(None, lambda name, alpha: amplify(units[name], alpha), list(gold), list(units), alphas,
                   [Changed(base), ExactMatch(gold)], generate=lambda _questions, edits: answers(edits))
    table = AmplificationTable(accuracy(base, gold), n_units)
    for alpha in alphas:  # the published row order: α, then shared before the random draws
        for name in units:
            s = next(s for s in result.settings if s.layer == name and s.strength == float(alpha))
            table.rows.append(AmplificationRow(alpha, name, s.mean("changed"), s.mean("accuracy")))
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


def snrf_table(vlm, llm, shared: Mapping[str, Mapping[int, torch.Tensor]], tasks: Mapping[str, Correct],
               settings: SnrfSettings | None = None, n_random: int = 1,
               combined: Mapping[str, Sequence[str]] | None = None) -> SnrfTable:
    """Base VLM; SNRF on the shared units; the full delta β·ΔW on every row and column (no truncation, the
    merge SNRF is compared with); and SNRF's rank-r delta on random units of the same counts — one sweep over
    these variants at β, each task's accuracy a scorer (teacher-forced `tasks[name](edits)`, no generation).
    `combined`: extra columns, the mean of other tasks' accuracies (e.g. {"arithmetic": ("sum", "product")})."""
    settings = settings or SnrfSettings()
    variants = {"base VLM": [],
                f"SNRF (r={settings.rank}, β={settings.beta:g})": snrf_edits(vlm, llm, shared, settings),
                f"full delta (β={settings.beta:g})": full_delta_edits(
                    vlm, llm, SnrfSettings(rank=None, beta=settings.beta, modules=settings.modules))}
    for k in range(n_random):
        variants[f"random units (seed {k})"] = snrf_edits(vlm, llm, random_like(shared, seed=k), settings)
    scorers = [Effect(task, lambda out, c=correct: torch.tensor(list(c(out.edits)), dtype=torch.float64))
               for task, correct in tasks.items()]
    result = sweep(vlm, lambda name, _beta: variants[name], [""], list(variants), [settings.beta], scorers,
                   generation={"max_new_tokens": 0})
    accuracy = {}
    for s in result.settings:
        acc = {task: s.mean(task) for task in tasks}
        accuracy[s.layer] = acc | {name: sum(acc[t] for t in parts) / len(parts)
                                   for name, parts in (combined or {}).items()}
    return SnrfTable(accuracy)
