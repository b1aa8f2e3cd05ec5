"""Per-row edits (interp.rows): each row's own edits, in one pass, equal that row's reference path."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.edits import LowRank
from interp.engine import PositionState, apply_reference
from interp.rows import PHASES, RowLowRank, RowSite, program, row_edit, row_keys
from test_edits import logits, no_hooks, random_edits
from tiny_models import random_batch, tiny_model

FAMILIES = ("llama", "gpt2", "qwen2")


def partial_strengths(edits: list, seed: int) -> list:
    """Half the clamps and gates at a random strength (the per-request strength knob)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, e in enumerate(edits):
        if e.kind in ("clamp", "gate") and i % 2:
            e = interp.edits.with_strength(e, float(torch.rand(1, generator=g)))
        out.append(e)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_row_site_equals_each_rows_reference(family):
    model = tiny_model(family)
    n_rows, seq, prompt_len = 5, 7, 4
    rows = [partial_strengths(random_edits(model, seed=10 * i + 1, n=8), i) for i in range(n_rows - 1)] + [[]]
    positions = torch.arange(seq).repeat(n_rows)
    slots = [0, 1, 0, 2, None]  # rows 0 and 2 share one recipe's slot; row 4 has no edits
    rows[2] = rows[0]
    keys = row_keys(slots, [r * seq for r in range(n_rows)], [seq] * n_rows, positions, [prompt_len] * n_rows)
    state = PositionState(prompt_len=prompt_len, positions=torch.arange(seq))
    for site in sorted({e.site for r in rows for e in r}):
        width = model.adapter.site_width(site)
        sets = [rows[0], rows[1], rows[3]]
        programs = [[]] + [[e for e in program(r, ph) if e.site == site] for r in sets for ph in PHASES]
        x = torch.randn(1, n_rows * seq, width) * 2  # a flattened continuous batch
        got = RowSite.build(programs, width)(x, keys).view(n_rows, seq, width)
        for r, edits in enumerate(rows):
            mine = [e for e in edits if e.site == site]
            expect = apply_reference(mine, x.view(n_rows, seq, width)[r:r + 1], state)[0]
            torch.testing.assert_close(got[r], expect, rtol=0, atol=1e-6)
        assert torch.equal(got[-1], x.view(n_rows, seq, width)[-1])  # the unedited row, bit for bit


def test_row_edit_on_a_padded_batch_equals_each_row_alone():
    model = tiny_model("llama")
    batch = random_batch()  # three rows
    rows = [random_edits(model, seed=3, n=8), [], partial_strengths(random_edits(model, seed=4, n=8), 1)]
    with row_edit(model, rows, prompt_len=5):
        together = logits(model, batch)
    for b, edits in enumerate(rows):
        with interp.edit(model, edits, fused=False, prompt_len=5):
            alone = logits(model, batch)[b]
        torch.testing.assert_close(together[b], alone, rtol=1e-5, atol=1e-5)
    assert (together[0] - logits(model, batch)[0]).abs().max() > 1e-3
    assert no_hooks(model)


def test_row_lowrank_equals_the_engines_lowrank():
    model = tiny_model("llama")
    module = "blocks.0.mlp.up_proj"
    linear = interp.engine.resolve_module(model, module)
    w = linear.weight.detach()
    g = torch.Generator().manual_seed(0)
    edits = [LowRank(module, torch.randn(w.shape[0], 2, generator=g), torch.randn(2, w.shape[1], generator=g)),
             LowRank(module, torch.randn(w.shape[0], 1, generator=g), torch.randn(1, w.shape[1], generator=g),
                     rows=[1, 5, 7], positions="generated"),
             LowRank(module, torch.randn(w.shape[0], 1, generator=g), torch.randn(1, w.shape[1], generator=g),
                     cols=[0, 3])]
    rows = [edits[:1], edits[1:], [], edits]
    seq, prompt_len = 6, 3
    x = torch.randn(len(rows), seq, w.shape[1])
    out = x @ w.T
    keys = row_keys([0, 1, None, 2], [r * seq for r in range(len(rows))], [seq] * len(rows),
                    torch.arange(seq).repeat(len(rows)), [prompt_len] * len(rows))
    programs = [[]] + [program(r, ph) for r in (rows[0], rows[1], rows[3]) for ph in PHASES]
    got = RowLowRank.build(programs, linear.weight.shape)(x, out, keys)
    for r, mine in enumerate(rows):
        expect = out[r].clone()
        for e in mine:
            on = torch.ones(seq, 1) if e.positions == "all" else (torch.arange(seq) >= prompt_len).float().view(-1, 1)
            expect = expect + on * (x[r] @ e.delta().T)
        torch.testing.assert_close(got[r], expect, rtol=1e-6, atol=1e-5)
