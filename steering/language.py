"""Language-neuron writers (METHODS.md §A step 7; LAPE's deactivation) and the ablation grid.

- `deactivate(neurons)`: the neurons' output held at 0 (`mlp.hook_post`, the
  input of down_proj: act(gate) · up = 0), as in the papers.
- `activate(neurons, values)`: the neurons' gate held at their mean active value
  in a language (`mlp.hook_pre`; act(gate) is then that value's activation at
  every position) — pushing the model towards that language.
- `ablation_grid`: perplexity on every language with each language's neurons
  deactivated: a (K+1) × K table (first row: nothing deactivated).

Writers return `interp.Clamp` edits; `interp.edit` / `interp.generate` apply them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

import interp
from interp.edits import POSITIONS, EditError

Neurons = Mapping[int, Sequence[int]]  # {layer: [neuron, ...]}


def _check(neurons: Neurons) -> None:
    if not neurons or not any(len(ns) for ns in neurons.values()):
        raise EditError("no neurons given (an empty language set?)")


def deactivate(neurons: Neurons, *, positions: str = "all") -> list[interp.Clamp]:
    """One Clamp-to-0 per layer at `blocks.L.mlp.hook_post`."""
    _check(neurons)
    return [interp.Clamp(f"blocks.{l}.mlp.hook_post", list(ns), 0.0, positions)
            for l, ns in sorted(neurons.items()) if len(ns)]


def activate(neurons: Neurons, values: torch.Tensor, *, positions: str = "all") -> list[interp.Clamp]:
    """One Clamp per layer at `blocks.L.mlp.hook_pre` to `values[L, n]` (a language's mean active gate values)."""
    _check(neurons)
    if positions not in POSITIONS:
        raise EditError(f"positions must be one of {', '.join(POSITIONS)}, not {positions!r}")
    return [interp.Clamp(f"blocks.{l}.mlp.hook_pre", list(ns), values[l, list(ns)].float(), positions)
            for l, ns in sorted(neurons.items()) if len(ns)]


@torch.inference_mode()
def perplexity(model: interp.Model, texts: Sequence[str], edits: Sequence = (), *, batch_size: int = 8,
               max_length: int = 128) -> float:
    """exp(mean next-token negative log-likelihood) over all tokens of `texts`, under `edits`."""
    tok = model.tokenizer
    total, count = 0.0, 0
    with interp.edit(model, edits):
        for s in range(0, len(texts), batch_size):
            enc = tok(list(texts[s:s + batch_size]), return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            logits = model.hf(**enc, use_cache=False).logits[:, :-1].float()
            target = enc["input_ids"][:, 1:]
            mask = enc["attention_mask"][:, 1:].bool() & enc["attention_mask"][:, :-1].bool()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            total += float(nll[mask].sum())
            count += int(mask.sum())
    if count == 0:
        raise EditError("perplexity: the texts hold no token pairs")
    return math.exp(total / count)


@dataclass
class AblationGrid:
    """ppl [K+1, K]: row 0 nothing deactivated, row 1 + i language i's neurons deactivated; columns: evaluated language."""

    langs: list[str]
    ppl: torch.Tensor
    sizes: list[int]  # neurons deactivated per row (0 for the first)

    def relative(self) -> torch.Tensor:
        """ppl over the unablated ppl of the same language: [K+1, K]."""
        return self.ppl / self.ppl[0]

    def table(self) -> str:
        head = "deactivated \\ eval " + " ".join(f"{l:>8}" for l in self.langs)
        rows = [head]
        for i, name in enumerate(["none"] + self.langs):
            rows.append(f"{name:>8} ({self.sizes[i]:>5}) " + " ".join(f"{x:8.2f}" for x in self.ppl[i].tolist()))
        return "\n".join(rows)

    def heatmap_png(self) -> bytes:
        """The relative perplexities as a heatmap (matplotlib), PNG bytes."""
        from interp.plotting import png, subplots

        rel = self.relative().numpy()
        fig, ax = subplots(figsize=(1.2 + 0.8 * len(self.langs), 1.2 + 0.7 * (len(self.langs) + 1)), dpi=100)
        im = ax.imshow(rel, cmap="Reds")
        ax.set_xticks(range(len(self.langs)), self.langs)
        ax.set_yticks(range(len(self.langs) + 1), ["none"] + self.langs)
        ax.set_xlabel("perplexity on")
        ax.set_ylabel("neurons deactivated")
        for i in range(rel.shape[0]):
            for j in range(rel.shape[1]):
                ax.text(j, i, f"{rel[i, j]:.2f}", ha="center", va="center", fontsize=8)
        fig.colorbar(im, ax=ax, label="ppl / unablated ppl")
        return png(fig)


def ablation_grid(model: interp.Model, neurons_by_lang: Mapping[str, Neurons], texts: Mapping[str, Sequence[str]],
                  **ppl_kwargs) -> AblationGrid:
    """Perplexity on every language of `texts` with each language's neurons deactivated in turn."""
    langs = list(texts)
    rows = [[perplexity(model, texts[y], (), **ppl_kwargs) for y in langs]]
    sizes = [0]
    for x in langs:
        edits = deactivate(neurons_by_lang[x])
        rows.append([perplexity(model, texts[y], edits, **ppl_kwargs) for y in langs])
        sizes.append(sum(len(ns) for ns in neurons_by_lang[x].values()))
    return AblationGrid(langs, torch.tensor(rows, dtype=torch.float64), sizes)


@dataclass
class AblationCheck:
    """The ablation grid judged language by language (issue 5's acceptance): deactivating X's neurons should
    raise perplexity on X more than on any other language, and more than deactivating as many random neurons
    of the same layers (the median over `draws` random sets). All ratios are over the unablated perplexity."""

    grid: AblationGrid
    own: list[float]  # [K]: X's neurons off, perplexity on X
    worst_other: list[float]  # [K]: X's neurons off, the largest ratio on another language
    random: list[float]  # [K]: as many random neurons off, perplexity on X (median of the draws)
    draws: int

    def won(self) -> list[bool]:
        return [o > w and o > r for o, w, r in zip(self.own, self.worst_other, self.random)]

    def wins(self) -> int:
        return sum(self.won())

    def text(self) -> str:
        lines = [self.grid.table()]
        for lang, o, w, r in zip(self.grid.langs, self.own, self.worst_other, self.random):
            lines.append(f"{lang}: own ×{o:.3f}, others ×{w:.3f} at most, random neurons ×{r:.3f} "
                         f"(median of {self.draws})")
        return "\n".join(lines)


def ablation_check(model: interp.Model, result, texts: Mapping[str, Sequence[str]], *, draws: int = 5,
                   **ppl_kwargs) -> AblationCheck:
    """`ablation_grid` on held-out `texts` for every language of `result` (a `probes.language_neurons.
    LanguageNeurons`), with the random-neuron control (`random_like`, seeds 10·i + s)."""
    from probes.language_neurons import random_like

    langs = list(texts)
    grid = ablation_grid(model, {l: result.neurons(l) for l in langs}, texts, **ppl_kwargs)
    rel = grid.relative()
    own, worst, rand = [], [], []
    for i, lang in enumerate(langs):
        own.append(float(rel[1 + i, i]))
        worst.append(max(float(rel[1 + i, j]) for j in range(len(langs)) if j != i))
        ratios = sorted(perplexity(model, texts[lang], deactivate(random_like(result, lang, seed=10 * i + s)),
                                   **ppl_kwargs) / float(grid.ppl[0, i]) for s in range(draws))
        rand.append(ratios[draws // 2])
    return AblationCheck(grid, own, worst, rand, draws)
