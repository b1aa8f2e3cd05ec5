"""Dopamine gates (issue 11, first part): the gate's two forms, its export as an engine edit, and the
paper's digits experiment at test size."""

from __future__ import annotations

import pytest
import torch

import interp
from steering.dopamine import GateSettings, UnitGates, attributions


def _gates(width: int = 6, seed: int = 0) -> UnitGates:
    g = UnitGates(width, GateSettings(temperature=0.5))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g.threshold.copy_(torch.randn(width, generator=gen))
        g.gain.copy_(1 + torch.rand(width, generator=gen))
    return g


def test_smooth_gate_is_the_formula_and_tends_to_the_hard_gate() -> None:
    g = _gates()
    a = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(1)) * 2
    expected = g.gain * torch.sigmoid((a - g.threshold) / 0.5) * a
    torch.testing.assert_close(g(a), expected)
    g.hard = True
    hard = g(a)
    torch.testing.assert_close(hard, g.gain * (a > g.threshold).float() * a)
    g.hard, g.temperature = False, 1e-4  # T → 0: the smooth gate becomes the hard one
    torch.testing.assert_close(g(a), hard, atol=1e-3, rtol=0)


def test_hard_gate_exports_as_the_engines_gate_edit() -> None:
    g = _gates()
    g.hard = True
    a = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2))
    edit = g.to_edit("blocks.0.mlp.hook_post")
    assert isinstance(edit, interp.Gate) and edit.hard
    torch.testing.assert_close(interp.apply_reference([edit], a), g(a))


def test_annealing_runs_geometrically_from_t0_to_t1() -> None:
    s = GateSettings(temperature=1.0, final_temperature=0.01, steps=3)
    assert [round(s.temperature_at(i), 6) for i in range(3)] == [1.0, 0.1, 0.01]


def test_attributions_split_units_by_what_the_gate_does() -> None:
    g = UnitGates(3)
    with torch.no_grad():
        g.threshold.copy_(torch.tensor([5.0, 0.0, -1.0]))
    base = torch.tensor([[1.0, 1.0, -0.5], [2.0, 1.0, -0.5]])  # units 0, 1 active; unit 2 not
    assert attributions(g, base) == {"turned_off": [0], "kept_on": [1], "turned_on": [2]}


@pytest.mark.slow
def test_digits_experiment_at_test_size() -> None:
    """Gates on a frozen MLP: a few hundred parameters per layer, hardened gates within 2 points of the
    smooth ones; the LoRA and sparsity figures are printed (what we measure, not what the paper expects)."""
    from steering.dopamine_digits import run

    r = run(0, hidden=32, pretrain_steps=400, adapt_steps=200)
    print("\n", r.to_json())
    assert r.parameters["gates"] == 2 * 2 * 32 and r.parameters["LoRA"] > 5 * r.parameters["gates"]
    assert abs(r.accuracy["gates hard"] - r.accuracy["gates smooth"]) <= 0.02
    assert r.accuracy["frozen (rotated)"] > 0.5 and r.accuracy["LoRA"] > 0.5  # the base and LoRA learned digits
    assert 0 < r.strongly_active["gates hard"] < 1
