"""llama.cpp control vectors (interp.control_vectors, `interp recipe`): what travels, exact round trips, and the
files llama.cpp's loader refuses refused here too, in one line. llama.cpp itself runs in
tests/test_control_vectors_llamacpp.py."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import interp
from cli.main import main
from interp.control_vectors import ControlVectorError, check_model, from_edits, llama_buffer, read_gguf, write_gguf
from interp.recipes import read_recipe, save_recipe
from tiny_models import tiny_model

D = 64


def _vec(seed: int, d: int = D) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def _raw_gguf(path: Path, tensors: dict[str, np.ndarray], hint: str = "other-model") -> Path:
    """A control vector as other tools write one (repeng's keys), with whatever tensors the test wants."""
    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", hint)
    w.add_uint32("controlvector.layer_count", len(tensors))
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_residual_additions_sum_per_layer_with_their_scale_and_resid_pre_moves_one_block_down() -> None:
    a, b, c = _vec(1), _vec(2), _vec(3)
    cv = from_edits([interp.Add("blocks.1.hook_resid_post", a, 2.0), interp.Add("blocks.1.hook_resid_post", b, -0.5),
                     interp.Add("blocks.3.hook_resid_pre", c, 1.0)], model_hint="m")
    assert sorted(cv.directions) == [1, 2]
    assert torch.allclose(cv.directions[1], 2 * a - 0.5 * b) and torch.equal(cv.directions[2], c)
    buf = llama_buffer(cv, n_layers=4)  # layer 1 first, as llama.cpp's loader lays a file out
    assert buf.shape == (3 * D,) and np.allclose(buf[:D], cv.directions[1].numpy())
    assert np.array_equal(buf[D:2 * D], c.numpy()) and not buf[2 * D:].any()


def test_what_cannot_travel_is_refused_in_one_line_naming_each_edit_or_dropped_and_listed() -> None:
    edits = [interp.Add("blocks.1.hook_resid_post", _vec(1)),
             interp.Clamp("blocks.1.mlp.hook_post", [3, 4], 2.0),
             interp.Add("blocks.1.hook_resid_post", _vec(2), positions="generated"),
             interp.Add("blocks.0.hook_resid_post", _vec(3)),
             interp.Add("blocks.1.hook_resid_mid", _vec(4))]
    with pytest.raises(ControlVectorError) as err:
        from_edits(edits)
    message = str(err.value)
    assert "\n" not in message and "--drop-others" in message
    for part in ("edit 1: clamp at blocks.1.mlp.hook_post", "edit 2: add at blocks.1.hook_resid_post (generated)",
                 "edit 3: add at blocks.0.hook_resid_post (llama.cpp cannot steer block 0",
                 "edit 4: add at blocks.1.hook_resid_mid"):
        assert part in message
    cv = from_edits(edits, drop_others=True)
    assert list(cv.directions) == [1] and torch.equal(cv.directions[1], _vec(1)) and len(cv.dropped) == 4
    with pytest.raises(ControlVectorError, match="no residual addition"):
        from_edits([interp.Clamp("blocks.1.mlp.hook_post", [3], 2.0)], drop_others=True)


def test_a_written_control_vector_reads_back_exactly_with_llama_cpps_keys(tmp_path) -> None:
    cv = from_edits([interp.Add(f"blocks.{n}.hook_resid_post", _vec(n), 0.7) for n in (1, 5, 9)], model_hint="m")
    path = write_gguf(tmp_path / "cv.gguf", cv, scale=2.0)
    r = gguf.GGUFReader(str(path))
    assert bytes(r.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    assert int(r.fields["controlvector.layer_count"].parts[-1][0]) == 3
    assert [t.name for t in r.tensors] == ["direction.1", "direction.5", "direction.9"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in r.tensors)
    back = read_gguf(path)
    assert back.model_hint == "m" and sorted(back.directions) == [1, 5, 9]
    for n in (1, 5, 9):
        assert torch.equal(back.directions[n], (_vec(n) * 0.7) * 2.0)
    assert not list(tmp_path.glob("*.tmp*"))


def test_another_tools_file_reads_and_repeated_layers_sum(tmp_path) -> None:
    a, b = _vec(1).numpy(), _vec(2).numpy()
    path = _raw_gguf(tmp_path / "repeng.gguf", {"direction.2": a, "direction.7": b})
    cv = read_gguf(path)
    assert cv.model_hint == "other-model" and np.array_equal(cv.directions[7].numpy(), b)
    edits = cv.edits()
    assert [e.site for e in edits] == ["blocks.2.hook_resid_post", "blocks.7.hook_resid_post"]


@pytest.mark.parametrize("tensors, message", [
    ({"direction.0": np.ones(D, np.float32)}, "direction.0"),
    ({"direction.1": np.ones(D, np.float16)}, "not F32"),
    ({"direction.1": np.ones((2, D), np.float32)}, "not one dimension"),
    ({"direction.1": np.ones(D, np.float32), "direction.2": np.ones(D + 1, np.float32)}, "different sizes"),
    ({"dir.1": np.ones(D, np.float32)}, "not named direction.N"),
    ({}, "no direction tensors"),
])
def test_files_llama_cpps_loader_refuses_are_refused_in_one_line(tmp_path, tensors, message) -> None:
    path = _raw_gguf(tmp_path / "bad.gguf", tensors)
    with pytest.raises(ControlVectorError, match=message) as err:
        read_gguf(path)
    assert "\n" not in str(err.value)


def test_truncated_foreign_and_missing_files_are_refused(tmp_path) -> None:
    good = write_gguf(tmp_path / "cv.gguf", from_edits([interp.Add("blocks.1.hook_resid_post", _vec(1))]))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(ControlVectorError, match="not a readable GGUF"):
        read_gguf(cut)
    (tmp_path / "text.gguf").write_text("hello")
    with pytest.raises(ControlVectorError, match="not a readable GGUF"):
        read_gguf(tmp_path / "text.gguf")
    with pytest.raises(ControlVectorError, match="does not exist"):
        read_gguf(tmp_path / "none.gguf")
    model = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(str(model), "llama")
    w.add_tensor("token_embd.weight", np.ones((4, D), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ControlVectorError, match="'llama' file, not a control vector"):
        read_gguf(model)


def test_width_and_layers_are_checked_against_the_model() -> None:
    cv = from_edits([interp.Add("blocks.3.hook_resid_post", _vec(1))])
    check_model(cv, n_layers=4, d_model=D)
    with pytest.raises(ControlVectorError, match="n_embd is 64, but m has d_model 576"):
        check_model(cv, n_layers=30, d_model=576, name="m")
    with pytest.raises(ControlVectorError, match=r"block\(s\) \[3\], but m has 2 blocks"):
        check_model(cv, n_layers=2, d_model=D, name="m")


def test_cli_exports_shows_and_refuses_in_one_line(tmp_path, capsys) -> None:
    model = tiny_model("llama")
    recipe = save_recipe(tmp_path / "r.safetensors", [interp.Add("blocks.1.hook_resid_post", _vec(1), 3.0),
                                                      interp.Clamp("blocks.0.mlp.hook_post", [1, 2], 5.0)], model,
                         provenance={"writer": "test"})
    assert main(["recipe", "show", str(recipe)]) == 0
    shown = capsys.readouterr().out
    assert "2 edit(s) for 'tiny-llama'" in shown and "writer=test" in shown
    assert f"= {3 * float(_vec(1).norm()):.4g}" in shown and "2 neuron(s)" in shown
    out = tmp_path / "cv.gguf"
    assert main(["recipe", "export-gguf", str(recipe), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "edit 1: clamp at blocks.0.mlp.hook_post" in err and not out.exists()
    assert main(["recipe", "export-gguf", str(recipe), str(out), "--drop-others", "--scale", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "blocks [1]" in printed and "dropped edit 1: clamp" in printed
    assert torch.allclose(read_gguf(out).directions[1], _vec(1) * 1.5)
    assert main(["recipe", "show", str(out)]) == 0
    assert f"1\tblocks.1.hook_resid_post\t{1.5 * float(_vec(1).norm()):.4g}" in capsys.readouterr().out
    bad = tmp_path / "bad.gguf"
    _raw_gguf(bad, {"direction.0": np.ones(D, np.float32)})
    for argv in (["recipe", "show", str(bad)],
                 ["recipe", "import-gguf", str(bad), "--model", "smollm2-135m", "--out", str(tmp_path / "x")]):
        assert main(argv) == 2
        assert "direction.0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert read_recipe(recipe)[0]["provenance"] == {"writer": "test"}
