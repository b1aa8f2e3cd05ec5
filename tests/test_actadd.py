"""ActAdd / CAA: the direction is the masked mean difference, and it steers sentiment on real weights."""

from __future__ import annotations

import re

import pytest
import torch

import interp
from steering import ContrastDirection, actadd, contrast_direction

POSITIVE = [
    "I love this, it is wonderful.", "What a beautiful day, I feel so happy.", "This is great, I really enjoy it.",
    "I am delighted and grateful.", "The food was delicious and the staff were kind.",
    "She is a wonderful, caring friend.", "Everything went perfectly, I am thrilled.",
    "I adore this place, it is amazing.", "This is the best gift ever, thank you!",
    "We had a fantastic time together.", "I feel joyful and excited.", "What a lovely, pleasant surprise.",
]
NEGATIVE = [
    "I hate this, it is terrible.", "What an awful day, I feel so sad.", "This is bad, I really dislike it.",
    "I am disgusted and angry.", "The food was disgusting and the staff were rude.",
    "She is a horrible, cruel person.", "Everything went wrong, I am miserable.",
    "I despise this place, it is dreadful.", "This is the worst gift ever, how annoying!",
    "We had a horrible time together.", "I feel depressed and upset.", "What a nasty, unpleasant surprise.",
]
NEUTRAL = [
    "I went to the store and", "The movie was", "My neighbour is", "Yesterday I met a man who",
    "The weather today is", "When I opened the letter, I", "The new restaurant downtown", "My job is",
    "Last weekend we", "The teacher told us that", "Our trip to the city", "The old house on the hill",
]

# Chosen by a sweep over layers 6-12 (resid_pre / resid_post) and scales 4-8 × direction:
# layer 10, mean pooling, 6 × direction (‖d‖ ≈ 12.9, ≈ 8% of the typical residual norm there)
# moved the score most in both directions while random directions stayed near the baseline.
SITE, SCALE, NEW_TOKENS = "blocks.10.hook_resid_pre", 6.0, 24

POSITIVE_WORDS = frozenset("""
good great love loved loving lovely happy happiness joy joyful wonderful beautiful beauty amazing awesome
excellent best nice kind enjoy enjoyed enjoying fun fantastic perfect delightful delighted delicious pleasant
glad excited exciting smile favorite friendly brilliant peaceful proud thank thanks grateful cheerful sweet
warm charming celebrate celebrating celebration honored welcome hope hopeful success successful""".split())
NEGATIVE_WORDS = frozenset("""
bad terrible awful hate hated horrible sad sadness angry anger worst worse poor ugly disgusting dreadful
miserable pain painful cruel annoying nasty evil boring fear afraid scared upset depressed lonely rude sick
hurt disappointed disappointing tragic unpleasant dark death dead die died dying kill killed killer killing
murder murderer crime criminal disaster violence violent war gun blood danger dangerous fail failed failure""".split())


def sentiment(text: str) -> int:
    """Distinct positive words minus distinct negative words (a word repeated 20 times counts once)."""
    words = set(re.findall(r"[a-z']+", text.lower()))
    return len(words & POSITIVE_WORDS) - len(words & NEGATIVE_WORDS)


def mean_sentiment(model, edits) -> tuple[float, list[str]]:
    texts = interp.generate(model, NEUTRAL, edits, max_new_tokens=NEW_TOKENS)
    return sum(map(sentiment, texts)) / len(texts), texts


def test_sentiment_scorer():
    assert sentiment("What a wonderful, wonderful day. I love it!") == 2
    assert sentiment("A terrible, dark night; he killed the gun owner.") == -4
    assert sentiment("The table is brown.") == 0


# ---------------------------------------------------------------- fast: the direction is what it says
def _hand_mean(model, prompts, site, position, skip_first=False):
    """One prompt at a time (no padding at all): mean over its tokens after the first (the attention
    sink; all of them when there is one, or when not skip_first), or its last token."""
    rows = []
    for p in prompts:
        a = interp.run_with_cache(model, [p], [site])[site][0].double()  # [seq, width]
        first = 1 if skip_first and a.shape[0] > 1 else 0
        rows.append(a[first:].mean(0) if position == "mean" else a[-1])
    return torch.stack(rows).mean(0)


@pytest.mark.parametrize("position", ["mean", "last"])
def test_direction_equals_hand_computed_mean_difference(smollm2, position):
    pos = ["I love this, it is wonderful and I am so happy today.", "Great!", "What a lovely day."]
    neg = ["I hate this.", "This is terrible, awful and I am very sad about it all.", "Bad."]
    site = "blocks.4.hook_resid_post"
    # batch_size 2: rows of different lengths share a padded batch, and a batch is ragged at the end
    d = contrast_direction(smollm2, pos, neg, site, position=position, batch_size=2)
    want = (_hand_mean(smollm2, pos, site, position) - _hand_mean(smollm2, neg, site, position)).float()
    assert isinstance(d, ContrastDirection)
    assert (d.site, d.n_pos, d.n_neg, d.position) == (site, 3, 3, position)
    assert d.vector.shape == (smollm2.adapter.d_model,) and d.vector.dtype == torch.float32
    torch.testing.assert_close(d.vector, want, atol=1e-5, rtol=1e-5)
    if position == "mean":
        sinkless = contrast_direction(smollm2, pos, neg, site, position=position, batch_size=2, skip_first=True)
        want = (_hand_mean(smollm2, pos, site, position, True) - _hand_mean(smollm2, neg, site, position, True))
        torch.testing.assert_close(sinkless.vector, want.float(), atol=1e-5, rtol=1e-5)


def test_actadd_returns_edits_and_registers_nothing(smollm2):
    edits = actadd(smollm2, ["I love it."], ["I hate it."], "blocks.3.mlp.hook_post", 2.5, positions="generated")
    assert len(edits) == 1 and isinstance(edits[0], interp.Add)
    e = edits[0]
    assert (e.site, e.scale, e.positions) == ("blocks.3.mlp.hook_post", 2.5, "generated")
    assert e.vector.shape == (smollm2.adapter.d_mlp,)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in smollm2.hf.modules())


@pytest.mark.parametrize("kwargs,needle", [
    (dict(site="blocks.99.hook_resid_pre"), "out of range"),
    (dict(site="blocks.1.hook_nope"), "unknown site"),
    (dict(position="first"), "position must be"),
    (dict(positive=["", "  "]), "no positive prompts"),
])
def test_contrast_direction_bad_input(smollm2, kwargs, needle):
    args = {**dict(positive=["I love it."], negative=["I hate it."], site="blocks.1.hook_resid_pre"), **kwargs}
    with pytest.raises(interp.InterpError, match=needle):
        contrast_direction(smollm2, args.pop("positive"), args.pop("negative"), args.pop("site"), **args)


# ---------------------------------------------------------------- slow: it steers, and a random direction does not
@pytest.mark.slow
def test_love_hate_direction_steers_sentiment(smollm2):
    d = contrast_direction(smollm2, POSITIVE, NEGATIVE, SITE)
    base, base_texts = mean_sentiment(smollm2, [])
    plus, plus_texts = mean_sentiment(smollm2, actadd(smollm2, POSITIVE, NEGATIVE, SITE, SCALE))
    minus, minus_texts = mean_sentiment(smollm2, [interp.Add(SITE, d.vector, -SCALE)])
    randoms = []
    for seed in range(3):
        r = torch.randn(d.vector.shape, generator=torch.Generator().manual_seed(seed))
        r = r / r.norm() * d.vector.norm()  # equal norm
        randoms.append((mean_sentiment(smollm2, [interp.Add(SITE, r, SCALE)])[0],
                        mean_sentiment(smollm2, [interp.Add(SITE, r, -SCALE)])[0]))
    report = (f"base {base:.2f}, +dir {plus:.2f}, -dir {minus:.2f}, random (+, -) {randoms}\n"
              f"+: {plus_texts[:3]}\n-: {minus_texts[:3]}\nbase: {base_texts[:3]}")
    print(report)  # shown with pytest -s
    up, down = plus - base, base - minus  # measured: ≈ 1.9 and ≈ 1.1 (scores are per continuation)
    assert up >= 1.0, report
    assert down >= 0.5, report
    real = (up + down) / 2
    for r_plus, r_minus in randoms:
        # a random direction of the same norm moves the score far less, either way round …
        assert max(abs(r_plus - base), abs(r_minus - base)) < 0.5 * real, report
        # … and adding it versus subtracting it barely separates the two (real: ≈ 3.0)
        assert abs(r_plus - r_minus) < 0.25 * (plus - minus), report
