"""The capability side-effect scorer (issue 31): a held-out set built from installed data, scored in one forward.
On smollm2-135m the unsteered model gets most items right (far above chance: 1 in 10 digits for the sums, one of
hundreds of words for copying), and a destructive edit (a large random Add at a middle layer) lowers it."""

from __future__ import annotations

import pytest
import torch

import interp
from steering.capability import (Capability, answer_ids, arithmetic_items, capability_set, copying_items,
                                 fact_items)
from steering.evaluate import Outputs, sweep


def test_the_items_are_right_and_held_out() -> None:
    for it in arithmetic_items(16):
        *_, last = it.prompt.strip().split("\n")
        a, _, b, _ = last.split()
        assert int(a) + int(b) == int(it.answer) <= 9 and last not in it.prompt.split("\n")[:3]
    for it in copying_items(16):
        first, second = it.prompt.removeprefix("Repeat: ").split(". Repeat: ")
        assert first == f"{second}{it.answer}" and len(first.split()) == 3
    facts = {it.prompt: it.answer for it in fact_items()}
    assert facts["The main language of France is"] == " French" and facts["The main language of Japan is"] == " Japanese"
    assert capability_set(8) == capability_set(8) and len(capability_set(8)) == 24  # deterministic
    with pytest.raises(ValueError, match="unknown capability task"):
        capability_set(tasks=("poetry",))


def test_answer_ids_are_the_next_token_in_context(smollm2) -> None:
    tok = smollm2.tokenizer
    arith, copy = arithmetic_items(1)[0], copying_items(1)[0]
    ids = answer_ids(tok, [arith, copy])
    assert tok.decode([ids[0]]) == arith.answer  # the digit after "= " (the space is the prompt's last token)
    assert copy.answer.startswith(tok.decode([ids[1]])) and tok.decode([ids[1]]).strip()  # the word's first token


@pytest.mark.slow
def test_unsteered_accuracy_is_far_above_chance_and_a_destructive_edit_lowers_it(smollm2) -> None:
    cap = Capability(capability_set(12))
    base = cap(Outputs(smollm2, ["unused"], (), []))
    assert base.shape == (36,)
    by_task = cap.by_task(base)
    assert by_task["arithmetic"] >= 0.6 and by_task["copying"] >= 0.6 and by_task["facts"] >= 0.6, by_task

    g = torch.Generator().manual_seed(0)
    noise = torch.nn.functional.normalize(torch.randn(smollm2.adapter.d_model, generator=g), dim=0)

    def family(layer: int, strength: float) -> list:
        return [interp.Add(f"blocks.{layer}.hook_resid_post", noise, scale=strength)]

    result = sweep(smollm2, family, ["unused"], [10], [0.0, 100.0], [cap], generation={"max_new_tokens": 0})
    kept, broken = (cap.by_task(s.scores["capability"]) for s in result.settings)
    assert kept == by_task  # strength 0 is the unsteered model
    assert result.settings[1].mean("capability") < result.settings[0].mean("capability") - 0.3, (kept, broken)
    assert broken["facts"] < by_task["facts"] and broken["arithmetic"] < by_task["arithmetic"]
