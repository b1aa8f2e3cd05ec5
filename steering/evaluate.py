"""One harness that says where and how hard to steer (issue 31): sweep layers × strengths, score every setting on
the same prompts, and recommend.

A steering family is a function `(layer, strength) → edits`; "layer" may be any label of a family's variants
(a method's name, "shared" vs "random (seed 0)" units), so comparisons of writers are sweeps too. For each
setting the harness generates every prompt's continuation in one batched `interp.generate` call (or the
caller's `generate`, e.g. a VLM answering image questions) and hands the result (`Outputs`) to the scorers,
each a small class with one job that returns one value per prompt `[P]`:

- target effect: `TokenProbability` (next-token probability of a concept), `LanguageShare`, `MentionRate`,
  `WordFeature` (a per-word feature's mean, e.g. Zipf frequency), `ExactMatch` (a task's accuracy against gold
  answers), `Changed` (answers that differ from reference answers), or `Effect(name, fn)` around any callable;
- fluency: `Perplexity` of the continuation under the unsteered model (all prompts in one forward; as a ratio to
  a matched reference when the sweep is given one) and `Distinct2`;
- side effects: `NeutralKL`, KL(unsteered ‖ steered) of the next-token distributions on neutral prompts,
  and `steering.capability.Capability`, the greedy next-token accuracy on a held-out set of arithmetic,
  copying and factual items (higher is better: bound it with a floor).

`Sweep` holds the per-prompt scores; `Sweep.steerability(effect, layer)` fits the effect against strength (the
slope, a bootstrap interval over prompts, and steering-bench's consistency: the fraction of prompts whose own
slope has the mean slope's sign), `recommend` picks the largest mean effect whose costs stay within stated bounds,
and `pareto` lists the settings no other setting beats on the effect and every cost at once. `compare(a, b)` gives
Cohen's d and a permutation p for two conditions, `compare_matched` the mean difference over pairs matched on a
cost (e.g. perplexity, so an effect is not just a side effect of broken text) with a sign-flip p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

import interp
from interp.batching import encode_left
from interp.errors import InterpError

Label = int | str  # a layer, or the name of a family's variant
Family = Callable[[Label, float], Sequence]
Generate = Callable[[list, Sequence], list[str]]  # (prompts, edits) → one continuation per prompt


@dataclass
class Outputs:
    """What one setting produced, for the scorers: its prompts, edits and steered continuations. `model` is None
    only for a sweep with its own `generate` whose scorers read the texts alone."""

    model: interp.Model | None
    prompts: list
    edits: Sequence
    texts: list[str]

    @torch.inference_mode()
    def next_logprobs(self, prompts: Sequence[str] | None = None, *, steered: bool = True) -> torch.Tensor:
        """log p(next token) after each prompt [P, vocab], with this setting's edits (or without): one forward."""
        enc = {k: v.to(self.model.device) for k, v in encode_left(self.model.tokenizer, prompts or self.prompts).items()}
        with interp.edit(self.model, self.edits if steered else (), prompt_len=enc["input_ids"].shape[1]):
            logits = self.model.hf(**enc, use_cache=False).logits[:, -1].float()
        return logits.log_softmax(-1)


# ----------------------------------------------------------------------------------------------- scorers
@dataclass
class Effect:
    """Any callable `Outputs → [P]` as the target effect (higher: more of the behaviour)."""

    name: str
    fn: Callable[[Outputs], torch.Tensor]
    kind: str = "effect"

    def __call__(self, out: Outputs) -> torch.Tensor:
        return torch.as_tensor(self.fn(out), dtype=torch.float64)


@dataclass
class TokenProbability:
    """p(any of `token_ids` next) after each prompt, with the edits."""

    token_ids: Sequence[int]
    name: str = "p(concept)"
    kind: str = "effect"

    def __call__(self, out: Outputs) -> torch.Tensor:
        return out.next_logprobs()[:, list(self.token_ids)].exp().sum(1).double()


@dataclass
class LanguageShare:
    """1 where the continuation is identified as `language` (Lingua, among `candidates`), else 0."""

    language: str
    candidates: Sequence[str] = ("en", "es", "fr", "de")
    name: str = "share"
    kind: str = "effect"

    def __call__(self, out: Outputs) -> torch.Tensor:
        return language_hits(out.texts, self.language, self.candidates)


def language_hits(texts: Sequence[str], language: str, candidates: Sequence[str]) -> torch.Tensor:
    """1 where a text is identified as `language` among `candidates` ∪ {language} (Lingua), else 0 [P]; its mean
    is the language share (`steering.language_eval` reports it so)."""
    from interp.language_id import identify_language

    ids = identify_language(texts, sorted({*candidates, language}))
    return torch.tensor([float(i == language) for i in ids], dtype=torch.float64)


@dataclass
class MentionRate:
    """1 where the continuation mentions any of `words` (case-insensitive, whole words), else 0."""

    words: Sequence[str]
    name: str = "mentions"
    kind: str = "effect"

    def __call__(self, out: Outputs) -> torch.Tensor:
        import re

        pattern = re.compile(r"\b(" + "|".join(re.escape(w.strip()) for w in self.words) + r")\b", re.IGNORECASE)
        return torch.tensor([float(bool(pattern.search(t))) for t in out.texts], dtype=torch.float64)


@dataclass
class WordFeature:
    """The mean of a per-word feature (e.g. Zipf frequency) over each continuation's words (NaN for none)."""

    feature: Callable[[str], float | None]
    name: str = "word feature"
    kind: str = "effect"

    def __call__(self, out: Outputs) -> torch.Tensor:
        import re

        values = []
        for text in out.texts:
            got = [v for v in (self.feature(w) for w in re.findall(r"[^\W\d_]+", text.lower())) if v is not None]
            values.append(sum(got) / len(got) if got else math.nan)
        return torch.tensor(values, dtype=torch.float64)


@dataclass
class ExactMatch:
    """1 where the stripped continuation equals the prompt's gold answer, else 0 (a task's accuracy)."""

    gold: Sequence[str]
    name: str = "accuracy"
    kind: str = "effect"

    def __call__(self, out: Outputs) -> torch.Tensor:
        return torch.tensor([float(t.strip() == g.strip()) for t, g in zip(out.texts, self.gold, strict=True)],
                            dtype=torch.float64)


@dataclass
class Changed:
    """1 where the stripped continuation differs from the reference answer to the same prompt (e.g. the
    unsteered model's), else 0."""

    reference: Sequence[str]
    name: str = "changed"
    kind: str = "effect"

    def __call__(self, out: Outputs) -> torch.Tensor:
        return torch.tensor([float(t.strip() != r.strip()) for t, r in zip(out.texts, self.reference, strict=True)],
                            dtype=torch.float64)


@torch.inference_mode()
def continuation_token_nll(model: interp.Model, prompts: Sequence[str], texts: Sequence[str]
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt, the summed negative log-likelihood of its continuation's tokens under the model without edits
    and their number ([P] float64, [P] long): all prompt + continuation pairs right-padded into one forward."""
    tok = model.tokenizer
    rows, spans = [], []
    for p, c in zip(prompts, texts, strict=True):
        p_ids, c_ids = tok(p)["input_ids"], tok(c, add_special_tokens=False)["input_ids"]
        rows.append(p_ids + c_ids)
        spans.append((len(p_ids), len(c_ids)))
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    logits = model.hf(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=False).logits
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:].to(model.device),
                                            reduction="none").cpu()  # [P, width - 1]: token t+1 given ..t
    total = torch.zeros(len(rows), dtype=torch.float64)
    for i, (n_p, n_c) in enumerate(spans):
        total[i] = nll[i, n_p - 1:n_p - 1 + n_c].double().sum()
    return total, torch.tensor([n_c for _, n_c in spans], dtype=torch.long)


def continuation_nll(model: interp.Model, prompts: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
    """Per prompt, the mean negative log-likelihood of its continuation under the model without edits [P]:
    one forward (`continuation_token_nll`; NaN where a continuation is empty)."""
    total, count = continuation_token_nll(model, prompts, texts)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def distinct2(texts: Sequence[str]) -> float:
    """Distinct word bigrams over all word bigrams of `texts` taken together (1 = no repeated pair)."""
    pairs = [tuple(w[i:i + 2]) for w in (t.split() for t in texts) for i in range(len(w) - 1)]
    return len(set(pairs)) / len(pairs) if pairs else 1.0


@dataclass
class Perplexity:
    """Perplexity of each continuation under the unsteered model (lower: more fluent); with the sweep's matched
    reference, as a ratio to it."""

    name: str = "ppl"
    kind: str = "fluency"

    def __call__(self, out: Outputs) -> torch.Tensor:
        return continuation_nll(out.model, out.prompts, out.texts).exp()


@dataclass
class Distinct2:
    """Distinct word bigrams / all word bigrams of each continuation (low: loops)."""

    name: str = "distinct-2"
    kind: str = "fluency"

    def __call__(self, out: Outputs) -> torch.Tensor:
        return torch.tensor([distinct2([text]) for text in out.texts], dtype=torch.float64)


@dataclass
class NeutralKL:
    """KL(unsteered ‖ steered) of the next-token distribution after each neutral prompt (a side effect) [N].
    The unsteered distributions are computed once per model and reused by every setting."""

    prompts: Sequence[str]
    name: str = "KL neutral"
    kind: str = "side"
    _base: tuple | None = field(default=None, repr=False)  # (model.hf, unsteered log-probs [N, vocab])

    def __call__(self, out: Outputs) -> torch.Tensor:
        if self._base is None or self._base[0] is not out.model.hf:
            self._base = (out.model.hf, out.next_logprobs(self.prompts, steered=False))
        base = self._base[1]
        steered = out.next_logprobs(self.prompts)
        return (base.exp() * (base - steered)).sum(1).double()


# ----------------------------------------------------------------------------------------------- statistics
def _slope(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares slopes of y [..., S] against x [S]."""
    xc = x - x.mean()
    return ((y - y.mean(-1, keepdim=True)) * xc).sum(-1) / (xc * xc).sum()


@dataclass
class Steerability:
    """The effect against strength at one layer: slope (per unit strength), its bootstrap interval over prompts,
    the fraction of prompts whose own slope has the mean slope's sign (steering-bench's consistency), and the share
    of the within-prompt variance (each prompt about its own mean) that the common slope explains."""

    layer: Label
    slope: float
    ci: tuple[float, float]
    consistency: float
    r2: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.ci[0] > 0 or self.ci[1] < 0


@dataclass
class Comparison:
    """Two conditions' per-prompt values: mean difference, Cohen's d, permutation p (two-sided)."""

    difference: float
    cohens_d: float
    p: float


def _finite(x) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    return x[x.isfinite()]


def compare(a: torch.Tensor, b: torch.Tensor, *, permutations: int = 2000, seed: int = 0) -> Comparison:
    """Cohen's d (pooled sd) of a − b and a two-sided permutation p over condition labels (NaNs dropped)."""
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        raise InterpError(f"a comparison needs two finite values per condition, got {len(a)} and {len(b)}")
    diff = float(a.mean() - b.mean())
    pooled = math.sqrt(((len(a) - 1) * float(a.var()) + (len(b) - 1) * float(b.var())) / max(1, len(a) + len(b) - 2))
    both, g = torch.cat([a, b]), torch.Generator().manual_seed(seed)
    hits = 0
    for _ in range(permutations):
        perm = both[torch.randperm(len(both), generator=g)]
        hits += abs(float(perm[:len(a)].mean() - perm[len(a):].mean())) >= abs(diff) - 1e-12
    return Comparison(diff, diff / pooled if pooled > 0 else math.inf * (diff != 0), (hits + 1) / (permutations + 1))


@dataclass
class MatchedComparison:
    """a − b over one-to-one pairs matched on a cost: how many pairs, their mean difference, a sign-flip p."""

    pairs: list[tuple[int, int]]
    difference: float
    p: float


def matched_pairs(cost_a: Sequence[float], cost_b: Sequence[float]) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (i, j) of a's and b's items by nearest log cost (costs are perplexities: positive);
    items with a non-finite cost are left out."""
    cand = sorted((abs(math.log(p) - math.log(q)), i, j) for i, p in enumerate(cost_a) for j, q in enumerate(cost_b)
                  if math.isfinite(p) and math.isfinite(q))
    used_i, used_j, out = set(), set(), []
    for _, i, j in cand:
        if i not in used_i and j not in used_j:
            used_i.add(i), used_j.add(j), out.append((i, j))
    return out


def sign_flip_p(diff: torch.Tensor, *, permutations: int = 2000, seed: int = 0) -> float:
    """Two-sided sign-flip p of the mean of paired differences (NaNs dropped)."""
    diff = _finite(diff)
    if not len(diff):
        return math.nan
    g = torch.Generator().manual_seed(seed)
    flips = torch.randint(0, 2, (permutations, len(diff)), generator=g, dtype=torch.float64) * 2 - 1
    hits = int(((flips * diff).mean(1).abs() >= abs(float(diff.mean())) - 1e-12).sum())
    return (hits + 1) / (permutations + 1)


def compare_matched(a, b, cost_a, cost_b, *, permutations: int = 2000, seed: int = 0) -> MatchedComparison:
    """a − b on items paired by nearest cost (`matched_pairs`): whether a difference survives when both sides
    cost the same, e.g. an axis score on continuations of equal perplexity."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    pairs = matched_pairs([float(c) for c in cost_a], [float(c) for c in cost_b])
    diff = torch.tensor([float(a[i] - b[j]) for i, j in pairs], dtype=torch.float64)
    finite = _finite(diff)
    return MatchedComparison(pairs, float(finite.mean()) if len(finite) else math.nan,
                             sign_flip_p(diff, permutations=permutations, seed=seed))


# ----------------------------------------------------------------------------------------------- the sweep
@dataclass
class Setting:
    """One (layer or variant, strength), each scorer's per-prompt values and the continuations."""

    layer: Label
    strength: float
    scores: dict[str, torch.Tensor]
    texts: list[str] = field(default_factory=list)

    @property
    def sample(self) -> str:
        return self.texts[0] if self.texts else ""

    def mean(self, name: str) -> float:
        v = self.scores[name]
        return float(v[~v.isnan()].mean()) if (~v.isnan()).any() else math.nan


@dataclass
class Sweep:
    """Every setting of a sweep, the scorers' kinds, and the matched reference's values where given."""

    settings: list[Setting]
    kinds: dict[str, str]
    reference: dict[str, float] = field(default_factory=dict)  # scorer → the matched reference's mean
    bootstrap: int = 1000
    seed: int = 0

    def value(self, s: Setting, name: str) -> float:
        """A setting's mean, as a ratio to the matched reference where there is one (perplexity)."""
        mean = s.mean(name)
        return mean / self.reference[name] if name in self.reference else mean

    def steerability(self, effect: str, layer: Label) -> Steerability:
        rows = sorted((s for s in self.settings if s.layer == layer), key=lambda s: s.strength)
        if len(rows) < 2:
            raise InterpError(f"layer {layer} has {len(rows)} strengths in this sweep; a slope needs two")
        x = torch.tensor([s.strength for s in rows], dtype=torch.float64)
        y = torch.stack([s.scores[effect] for s in rows], 1)  # [P, S]
        y = y[~y.isnan().any(1)]
        if not len(y):
            raise InterpError(f"no prompt has a {effect} value at every strength of layer {layer}")
        mean_y = y.mean(0)
        slope = float(_slope(x, mean_y))
        g = torch.Generator().manual_seed(self.seed)
        picks = torch.randint(len(y), (self.bootstrap, len(y)), generator=g)
        boot = _slope(x, y[picks].mean(1)).sort().values
        lo, hi = float(boot[int(0.025 * (self.bootstrap - 1))]), float(boot[int(0.975 * (self.bootstrap - 1))])
        per_prompt = _slope(x, y)
        consistency = float((torch.sign(per_prompt) == math.copysign(1, slope)).double().mean()) if slope else 0.0
        within = y - y.mean(1, keepdim=True)  # each prompt about its own mean: the common slope's share of it
        total = float((within ** 2).sum())
        r2 = 1 - float(((within - slope * (x - x.mean())) ** 2).sum()) / total if total > 0 else 1.0
        return Steerability(layer, slope, (lo, hi), consistency, r2)

    def admissible(self, bounds: dict[str, float], floors: dict[str, float] | None = None) -> list[Setting]:
        """Settings whose every bounded cost (a ratio for perplexity with a reference) is at most its bound and
        every floored score (e.g. distinct-2) at least its floor."""
        def ok(s: Setting) -> bool:
            return (all(self.value(s, n) <= b for n, b in bounds.items())
                    and all(self.value(s, n) >= f for n, f in (floors or {}).items()))
        return [s for s in self.settings if ok(s)]

    def recommend(self, effect: str, bounds: dict[str, float], floors: dict[str, float] | None = None
                  ) -> Setting | None:
        """The admissible setting with the largest mean effect (ties: the weaker strength, then the earlier layer)."""
        pool = self.admissible(bounds, floors)
        order = {id(s): i for i, s in enumerate(self.settings)}
        return max(pool, key=lambda s: (self.value(s, effect), -abs(s.strength), -order[id(s)])) if pool else None

    def pareto(self, effect: str, costs: Sequence[str]) -> list[Setting]:
        """Settings that no other setting matches or beats on the effect (higher) and every cost (lower) while
        beating it on at least one."""
        def vals(s: Setting) -> list[float]:
            return [self.value(s, effect), *(-self.value(s, c) for c in costs)]

        front = []
        for s in self.settings:
            v = vals(s)
            if not any(all(a >= b for a, b in zip(vals(o), v)) and any(a > b for a, b in zip(vals(o), v))
                       for o in self.settings if o is not s):
                front.append(s)
        return front

    def table(self) -> list[dict]:
        """One row per setting: layer, strength, each scorer's value (ratios where there is a reference)."""
        return [{"layer": s.layer, "strength": s.strength, **{n: self.value(s, n) for n in self.kinds},
                 "sample": s.sample} for s in self.settings]

    def markdown(self) -> str:
        names = list(self.kinds)
        head = "| layer | strength | " + " | ".join(n + (" (× ref.)" if n in self.reference else "") for n in names) + " |"
        lines = [head, "|" + "---|" * (len(names) + 2)]
        for row in self.table():
            lines.append(f"| {row['layer']} | {row['strength']:g} | " + " | ".join(f"{row[n]:.4g}" for n in names) + " |")
        return "\n".join(lines)


def sweep(model: interp.Model | None, family: Family, prompts: Sequence, layers: Sequence[Label],
          strengths: Sequence[float], scorers: Sequence, *, reference_texts: Sequence[str] | None = None,
          generation: dict | None = None, generate: Generate | None = None, seed: int | None = None,
          progress: bool = False) -> Sweep:
    """Score `family(layer, strength)` for every layer × strength on `prompts`: one batched generate per setting.

    layers: layers, or labels of the family's variants (methods, unit sets) — anything `family` takes.
    `reference_texts`: the matched reference's continuations of the same prompts (e.g. the unsteered model's own
    answers to translated prompts), scored like a setting so fluency is reported as a ratio to them.
    `generation={"max_new_tokens": 0}`: no generation (continuations empty), for scorers that read the next token
    only (`TokenProbability`, `NeutralKL`, `Capability`) or score the edits themselves (`Effect`).
    `generate(prompts, edits) → texts`: how a setting's continuations are made when not by `interp.generate`
    (e.g. a VLM's answers to image questions; `model` may then be None). `seed`: `torch.manual_seed(seed)`
    before every setting's generation, so sampled settings draw the same random stream."""
    prompts = list(prompts)
    if not prompts or not layers or not strengths or not scorers:
        raise InterpError("a sweep needs prompts, layers, strengths and scorers")
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise InterpError(f"two scorers share a name: {names}")
    if model is None and generate is None:
        raise InterpError("a sweep without a model needs its own generate")
    gen = {"max_new_tokens": 32, "repetition_penalty": 1.3, **(generation or {})}
    if generate is None:
        def generate(batch: list, edits: Sequence) -> list[str]:
            return interp.generate(model, batch, edits, **gen) if gen["max_new_tokens"] else [""] * len(batch)
    grid = [(layer, strength) for layer in layers for strength in strengths]
    if progress:
        from tqdm.auto import tqdm

        grid = tqdm(grid, desc="settings")
    settings = []
    for layer, strength in grid:
        edits = list(family(layer, strength))
        if seed is not None:
            torch.manual_seed(seed)
        texts = list(generate(prompts, edits))
        out = Outputs(model, prompts, edits, texts)
        settings.append(Setting(layer, float(strength), {s.name: s(out) for s in scorers}, texts))
    reference = {}
    if reference_texts is not None:
        ref = Outputs(model, prompts, (), list(reference_texts))
        reference = {s.name: float(s(ref).nanmean()) for s in scorers if s.kind == "fluency" and s.name == "ppl"}
    return Sweep(settings, {s.name: s.kind for s in scorers}, reference)
