"""The steering harness on the real smollm2-135m (issue 31's acceptance): an ActAdd direction for " dog" (the
contrast of dog sentences with matched sentences without dogs, at layer 10's residual), swept over 4 strengths on 6
neutral prompts, raises p(" dog" next) with a slope whose bootstrap interval over prompts excludes 0; random
directions of the same norm move it by far less, and most of their intervals cover 0. Both report the neutral-KL
side effect, which grows with strength for both.

A random direction is not always null: pushing the residual anywhere disrupts the model, which lowers a plausible
token's probability a little on every prompt, so one draw's interval can exclude 0 on the negative side. The test
draws four and asserts that at least two cover 0 (three of four do here) and that every random slope is below a
twentieth of the real one (about a fiftieth here)."""

from __future__ import annotations

import pytest
import torch

import interp
from steering.actadd import contrast_direction
from steering.evaluate import NeutralKL, TokenProbability, sweep

LAYER, STRENGTHS = 10, [0.0, 1.0, 2.0, 3.0]
PROMPTS = ["I would like to tell you about the", "Yesterday I saw a", "My favourite thing in the world is the",
           "The picture showed a", "She pointed at the", "He bought a new"]
NEUTRAL = ["The meeting starts at", "Once upon a time", "The capital of France is"]
DOG = ["I walked my dog in the park.", "The dog barked at the mailman.", "My dog loves bones.",
       "A puppy is a young dog."]
NO_DOG = ["I walked to the park.", "The man waited for the mailman.", "My sister loves books.",
          "A child is a young person."]


@pytest.mark.slow
def test_a_real_direction_is_steerable_and_a_random_one_of_the_same_norm_is_not(smollm2) -> None:
    site = f"blocks.{LAYER}.hook_resid_post"
    real = contrast_direction(smollm2, DOG, NO_DOG, site).vector
    g = torch.Generator().manual_seed(0)
    randoms = [torch.nn.functional.normalize(torch.randn(real.shape, generator=g), dim=0) * real.norm()
               for _ in range(4)]
    dog = smollm2.tokenizer(" dog", add_special_tokens=False)["input_ids"]
    scorers = [TokenProbability(dog), NeutralKL(NEUTRAL)]

    def run(vector: torch.Tensor):
        result = sweep(smollm2, lambda layer, s: [interp.Add(f"blocks.{layer}.hook_resid_post", vector, scale=s)],
                       PROMPTS, [LAYER], STRENGTHS, scorers, generation={"max_new_tokens": 0})
        return result, result.steerability("p(concept)", LAYER)

    (real_sweep, real_st), *others = [run(v) for v in [real, *randoms]]
    rows = [f"{name}: slope {st.slope:+.2e} CI [{st.ci[0]:+.2e}, {st.ci[1]:+.2e}], KL "
            + " ".join(f"{s.mean('KL neutral'):.3f}" for s in r.settings)
            for name, (r, st) in zip(["real", "random 0", "random 1", "random 2", "random 3"], [(real_sweep, real_st), *others])]
    report = "\n".join(rows)
    print("\n" + report)

    assert real_st.ci[0] > 0 and real_st.consistency == 1.0, report
    assert sum(st.ci[0] <= 0 <= st.ci[1] for _, st in others) >= 2, report
    assert all(abs(st.slope) < real_st.slope / 20 for _, st in others), report
    for result, _ in [(real_sweep, real_st), *others]:  # the side effect is reported, and grows with strength
        kl = [s.mean("KL neutral") for s in result.settings]
        assert kl[0] < 1e-6 and all(a < b for a, b in zip(kl, kl[1:])), report
