"""Language neurons: the published Mistral-7B MGSM masks reproduced exactly; the method on smollm2-135m.

The reference data (../shared/reference/language-neurons-mgsm/, from the paper's
public repository) are read with `torch.load(weights_only=True)`: tensors only,
no arbitrary unpickling. Where the folder is absent the test says so and skips.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from probes.language_neurons import (LanguageCounts, identify, lape, layer_distribution, phases, random_like,
                                     threshold)

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "language-neurons-mgsm"
LANGS = "en ru es fr de zh ja bn th sw".split()


def _load(pattern: str):
    files = sorted(REF.glob(pattern))
    assert len(files) == 1, pattern
    return torch.load(files[0], weights_only=True)


@pytest.fixture(scope="module")
def mgsm() -> LanguageCounts:
    if not REF.is_dir():
        pytest.skip(f"published reference counts not found at {REF} (from NJUNLP/Language-Neurons-Alignment)")
    full = [_load(f"activations/mgsm/activation.{l}.*.pt") for l in LANGS]
    prefix = [_load(f"activations/mgsm/prefix.activation.{l}.*.pt") for l in LANGS]
    return LanguageCounts(LANGS, torch.stack([d["over_zero"] for d in full]),
                          torch.tensor([int(d["total_tokens"]) for d in full]),
                          torch.stack([d["over_zero"] for d in prefix]),
                          torch.tensor([int(d["total_tokens"]) for d in prefix]))


def test_reproduces_the_published_mistral_masks(mgsm) -> None:
    result = identify(mgsm)
    assert result.tau == pytest.approx(0.56444, abs=5e-6)
    assert result.lambda_path == pytest.approx([0.1, 0.15, 0.125, 0.1125, 0.10625, 0.109375, 0.1109375, 0.11015625])
    assert result.lam == 0.109375
    assert int(result.selected.sum()) == 4588
    assert result.count_by_languages() == [1369, 1866, 617, 310, 153, 127, 59, 40, 27, 20, 0]
    assert result.per_language() == {"en": 142, "ru": 556, "es": 523, "fr": 821, "de": 941, "zh": 412, "ja": 676,
                                     "bn": 948, "th": 622, "sw": 666}
    published = _load("activation_masks/mgsm/0.01-0.109375/mask.*")
    for k, lang in enumerate(LANGS):
        theirs = {(layer, int(n)) for layer, idx in enumerate(published[k]) for n in idx.tolist()}
        ours = {(layer, n) for layer, ns in result.neurons(lang).items() for n in ns}
        assert len(theirs & ours) / len(theirs | ours) == 1.0, lang  # Jaccard
    assert int(result.agnostic.sum()) == 7797
    assert identify(mgsm, lam=0.0).count_by_languages() == [4024, 473, 58, 19, 7, 7, 0, 0, 0, 0, 0]
    d = layer_distribution(result)
    assert sum(d["specific"]) == 1866 and sum(d["related"]) == 617 + 310 + 153 + 127 + 59 + 40 + 27 + 20
    ph = phases(result)
    assert ph == {"understanding": [0, 1, 2, 3], "shared reasoning": list(range(4, 18)),
                  "output transformation": list(range(18, 30)), "vocabulary output": [30, 31]}


def test_lape_baseline_on_the_same_counts(mgsm) -> None:
    """LAPE keeps 1 % lowest (natural-log) entropies among neurons above τ for some language."""
    result = lape(mgsm)
    p = mgsm.probabilities()
    assert int(result.selected.sum()) == 4588
    assert not (result.selected & ~(p > result.tau).any(0)).any()  # never a neuron with no p_k > τ
    assert result.tau == threshold(p)
    assert result.count_by_languages()[0] == 0  # every LAPE neuron has a language
    assert result.masks.sum() > 0


def test_synthetic_counts_find_planted_neurons() -> None:
    """A neuron firing for one language only is specific; one firing for all is agnostic; the λ search holds."""
    g = torch.Generator().manual_seed(0)
    K, L, N, T = 4, 3, 400, 10_000
    counts = torch.randint(0, T // 4, (K, L, N), generator=g)
    counts[2, 1, 7] = T  # language 2 only
    counts[:, 1, 7].clamp_(max=T)
    counts[[0, 1, 3], 1, 7] = 0
    counts[:, 2, 9] = T  # every language, always
    counts[[0, 1], 0, 5] = T  # two languages
    counts[[2, 3], 0, 5] = 0
    result = identify(LanguageCounts(["a", "b", "c", "d"], counts, torch.full((K,), T)))
    assert result.neurons("c").get(1, []).count(7) == 1 and result.specific[1, 7]
    assert result.related[0, 5] and result.masks[0, 0, 5] and result.masks[1, 0, 5]
    assert result.agnostic[2, 9]
    assert not (result.selected & (result.n_langs == K)).any()  # the λ search's condition
    ctrl = random_like(result, "c", seed=3)
    assert {l: len(ns) for l, ns in ctrl.items()} == {l: len(ns) for l, ns in result.neurons("c").items()}


# ---------------------------------------------------------------- smollm2-135m, en / es / fr / de

SMOL_LANGS = ["en", "es", "fr", "de"]


@pytest.fixture(scope="module")
def smol_langs(smollm2_language_counts):
    counts, freq = smollm2_language_counts  # SMOL_LANGS on 150 verses
    return counts, freq, identify(counts)


@pytest.mark.slow
def test_deactivating_a_language_hurts_it_most(smollm2, smol_langs) -> None:
    """Perplexity grid: X's neurons off raise ppl on X more than on any other language (≥ 3 of 4), and more
    than switching off as many random neurons of the same layers (the median of 3 random draws; 8 held-out
    verses per language here; `benchmarks/language_ablation.py` runs 16 verses and 5 draws on smollm2-135m and
    gemma3-270m)."""
    from probes.language_counts import bible_texts
    from steering.language import ablation_check

    counts, _, result = smol_langs
    assert counts.tokens.min() > 0.95 * counts.tokens.max()  # equal token budgets
    check = ablation_check(smollm2, result, bible_texts(SMOL_LANGS, limit=8, offset=3000), draws=3)  # held out
    print("\n" + check.text())
    assert check.wins() >= 3
    assert check.grid.heatmap_png().startswith(b"\x89PNG")


@pytest.mark.slow
def test_activating_spanish_neurons_makes_english_prompts_answer_in_spanish(smollm2, smol_langs) -> None:
    import interp
    from interp.language_id import language_share
    from probes.language_counts import active_means
    from steering.language import activate

    _, freq, result = smol_langs
    prompts = ["The weather today is", "My favourite food is", "In the morning I usually", "The history of the city",
               "Yesterday my friend told me", "The best way to learn is", "When I was a child", "This book is about"]
    edits = activate(result.neurons("es"), active_means(freq, SMOL_LANGS)[SMOL_LANGS.index("es")])
    plain = language_share(interp.generate(smollm2, prompts, max_new_tokens=24), "es", SMOL_LANGS)
    steered = language_share(interp.generate(smollm2, prompts, edits, max_new_tokens=24), "es", SMOL_LANGS)
    print(f"\nshare of continuations identified as Spanish: unsteered {plain:.2f}, Spanish neurons activated {steered:.2f}")
    assert steered > plain and steered >= 0.5
