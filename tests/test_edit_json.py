"""Edits in their JSON form (EDIT_SCHEMA) and at a strength: round trips, refusals that name the field, semantics."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

import interp
from interp.edits import EDIT_SCHEMA, EditError, edit_from_json, edit_to_json, with_strength
from interp.engine import apply_reference
from interp.recipes import read_recipe, save_recipe
from tiny_models import tiny_model

W = 8


def one_of_each() -> list:
    g = torch.Generator().manual_seed(0)
    return [interp.Add("s", torch.randn(W, generator=g), 2.5, "generated"),
            interp.Clamp("s", [1, 4], [3.0, -1.0], "prompt", strength=0.5),
            interp.Scale("s", [0, 7], 0.25),
            interp.Gate("s", torch.randn(W, generator=g), torch.rand(W, generator=g), 0.7, True, strength=0.3),
            interp.Ablate("s", torch.randn(2, W, generator=g), strength=0.8, units=[2, 3]),
            interp.LowRank("m", torch.randn(6, 2, generator=g), torch.randn(2, W, generator=g), cols=[1, 2])]


def same(a, b) -> bool:
    fields = set(edit_to_json(a)) | set(edit_to_json(b))
    return all(json.dumps(edit_to_json(a).get(f)) == json.dumps(edit_to_json(b).get(f)) for f in fields)


def test_every_kind_round_trips_through_json_and_fits_the_schema():
    validator = jsonschema.Draft202012Validator(EDIT_SCHEMA)
    for e in one_of_each():
        obj = json.loads(json.dumps(edit_to_json(e)))  # plain JSON all the way
        validator.validate(obj)
        back = edit_from_json(obj)
        assert type(back) is type(e) and same(back, e)


def test_recipes_store_the_same_form(tmp_path):
    model = tiny_model("llama")
    edits = [interp.Clamp("blocks.0.mlp.hook_post", [1, 2], 4.0, strength=0.5),
             interp.Add("blocks.1.hook_resid_post", torch.ones(model.adapter.d_model), 2.0)]
    header, back = read_recipe(save_recipe(tmp_path / "r.safetensors", edits, model))
    assert header["edits"] == [edit_to_json(e, tensors=False) for e in edits]
    assert all(same(a, b) for a, b in zip(edits, back))


@pytest.mark.parametrize("obj, field", [
    ({"kind": "add", "site": "s"}, "vector"),
    ({"kind": "add", "site": "s", "vector": [1, "x"]}, "vector.1"),
    ({"kind": "clamp", "site": "s", "neurons": [-1]}, "neurons.0"),
    ({"kind": "clamp", "site": "s", "neurons": [1], "positions": "later"}, "positions"),
    ({"kind": "gate", "site": "s", "thresholds": [0.0], "gains": [1.0], "temperature": 0}, "temperature"),
    ({"kind": "scale", "site": "s", "neurons": [1], "colour": "red"}, "colour"),
    ({"kind": "lowrank", "module": "m", "A": [[1.0]], "B": [1.0]}, "B.0"),
])
def test_bad_json_edits_are_refused_naming_the_field(obj, field):
    with pytest.raises(EditError, match=rf"field {field}\b"):
        edit_from_json(obj)


def test_unknown_kinds_and_shapes_are_refused():
    with pytest.raises(EditError, match="kind"):
        edit_from_json({"kind": "teleport"})
    with pytest.raises(EditError, match="2 neurons but 3 values"):
        edit_from_json({"kind": "clamp", "site": "s", "neurons": [1, 2], "values": [1.0, 2.0, 3.0]})


def test_strength_scales_each_kind_as_it_defines():
    x = torch.randn(2, 3, W)
    add, clamp, scale, gate, ablate, lowrank = one_of_each()
    clamp = interp.Clamp("s", [1, 4], [3.0, -1.0])
    assert with_strength(add, 0.4).scale == pytest.approx(1.0)
    for e in (clamp, scale, gate, ablate):
        torch.testing.assert_close(apply_reference([with_strength(e, 0.0)], x), x)  # strength 0: no effect
        full, half = apply_reference([e], x), apply_reference([with_strength(e, 0.5)], x)
        if e.kind != "scale":
            torch.testing.assert_close(half, (x + full) / 2, rtol=1e-5, atol=1e-6)  # halfway there
    assert apply_reference([clamp], x)[..., [1, 4]].eq(torch.tensor([3.0, -1.0])).all()
    torch.testing.assert_close(with_strength(scale, 0.5).gains, torch.tensor([0.625, 0.625]))
    torch.testing.assert_close(with_strength(lowrank, 2.0).delta(), 2 * lowrank.delta())
    with pytest.raises(EditError, match="finite"):
        with_strength(add, float("nan"))
