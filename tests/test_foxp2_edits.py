"""FOXP2 edits (step 3) against the formula written out by hand."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.engine import FusedSite, PositionState, apply_reference
from steering.foxp2 import Foxp2Layer, foxp2_edits

W = 16


def layer(seed=0) -> Foxp2Layer:
    g = torch.Generator().manual_seed(seed)
    return Foxp2Layer(layer=3, directions=torch.randn(2, W, generator=g), mean_diff=torch.randn(W, generator=g),
                      target_neurons=[1, 2, 5], english_neurons=[7, 8], english_directions=torch.randn(1, W, generator=g))


def test_edits_apply_the_formula() -> None:
    w = layer()
    x = torch.randn(2, 4, W, generator=torch.Generator().manual_seed(1))
    q, _ = torch.linalg.qr(w.directions.T)
    shift = q @ (q.T @ w.mean_diff)
    e = w.english_directions[0] / w.english_directions[0].norm()
    want = x.clone()
    want[..., [1, 2, 5]] += 2.0 * shift[[1, 2, 5]]
    want[..., [7, 8]] -= 0.5 * (x @ e)[..., None] * e[[7, 8]]
    edits = foxp2_edits([w], alpha=2.0, beta=0.5)
    assert [type(x).__name__ for x in edits] == ["Add", "Ablate"] and edits[0].site == "blocks.3.mlp.hook_post"
    torch.testing.assert_close(apply_reference(edits, x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(FusedSite.build(edits, W)(x, PositionState()), want, rtol=1e-5, atol=1e-5)


def test_parts_switch_off_for_ablations() -> None:
    w = layer()
    assert [type(x).__name__ for x in foxp2_edits([w], positive=False)] == ["Ablate"]
    assert [type(x).__name__ for x in foxp2_edits([w], negative=False)] == ["Add"]
    with pytest.raises(interp.EditError, match="neither"):
        foxp2_edits([w], positive=False, negative=False)
    with pytest.raises(interp.EditError, match="window"):
        foxp2_edits([])
