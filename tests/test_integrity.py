"""Every byte of an atlas folder and of a recipe file is covered by a checksum (issue 26).

A small atlas (with documents, vocab, a report and a binary plot) and a small recipe (three edit
kinds) are corrupted at every byte position with every single-bit flip (0x20 turns 1e-05 into 1E-05,
which parses to the same value) and two more patterns (0x29: space↔tab, valid JSON too; 0xFF), truncated
at every length and appended
to; each corrupted copy must be refused with a typed one-line error. Hypothesis adds arbitrary
(position, mask) pairs. No model is loaded; the corrupted copies go to a memory-backed folder where
the machine has one (/dev/shm: the file takes seconds instead of a minute of disk writes).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import interp
from atlases import Atlas, load_atlas
from interp.recipes import RecipeError, read_recipe, save_recipe
from tiny_models import tiny_model

# XOR masks: each single bit (0x20: e↔E), space↔tab (keeps JSON valid), every bit.
MASKS = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x29, 0xFF)


def _small_atlas(folder: Path) -> Path:
    tensors = {"blocks.0.mlp.hook_post/frequency": torch.tensor([[0.25, 1e-05, 0.5]]),
               "blocks.0.mlp.hook_post/topk_doc": torch.arange(6).view(3, 2)}
    Atlas(model="m1", sites=["blocks.0.mlp.hook_post"], method="test", tensors=tensors,
          params={"k": 2, "eps": 1e-05}, documents=[{"index": 0, "text": "héllo", "group": "de"}],
          vocab=["a", " b"]).save(folder, extra_files={"report.html": "<p>hi</p>"},
                                  binary_files={"plot.png": b"\x89PNG\r\n\x1a\n\x00\x01"})
    return folder


@pytest.fixture(scope="module")
def atlas_folder(tmp_path_factory) -> Path:
    return _small_atlas(tmp_path_factory.mktemp("atlas") / "a")


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    model = tiny_model("llama")
    d, m = model.adapter.d_model, model.adapter.d_mlp
    g = torch.Generator().manual_seed(0)
    edits = [interp.Add("blocks.0.hook_resid_post", torch.randn(d, generator=g), scale=1e-05),
             interp.Clamp("blocks.1.mlp.hook_post", [3, 5], [4.0, -1.5]),
             interp.LowRank("blocks.1.mlp.down_proj", torch.randn(d, 1, generator=g), torch.randn(1, 2, generator=g),
                            cols=[3, 4])]
    return save_recipe(tmp_path_factory.mktemp("recipe") / "r.safetensors", edits, model,
                       provenance={"writer": "test", "note": "a b"})


@pytest.fixture
def scratch(tmp_path):
    """A folder for thousands of short-lived copies: in /dev/shm where it exists, else tmp_path."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(dir=shm, prefix="interp-test-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _variants(data: bytes):
    """(label, corrupted bytes): every position × every mask, every truncation, two appends."""
    for i in range(len(data)):
        for mask in MASKS:
            yield f"flip {i} ^{mask:#x}", data[:i] + bytes([data[i] ^ mask]) + data[i + 1:]
    for n in range(len(data)):
        yield f"truncate to {n}", data[:n]
    yield "append newline", data + b"\n"
    yield "append space", data + b" "


def _atlas_refuses(folder: Path) -> str | None:
    """The one-line refusal, or None when the atlas loads."""
    try:
        load_atlas(folder)
    except interp.AtlasError as exc:
        assert "\n" not in str(exc)
        return str(exc)
    return None


def _recipe_refuses(path: Path) -> str | None:
    try:
        read_recipe(path)
    except RecipeError as exc:
        assert "\n" not in str(exc)
        return str(exc)
    return None


def test_the_intact_atlas_and_recipe_load(atlas_folder, recipe_file) -> None:
    assert _atlas_refuses(atlas_folder) is None
    assert _recipe_refuses(recipe_file) is None
    # every file the atlas wrote is a file the checks cover (nothing outside them)
    assert sorted(p.name for p in atlas_folder.iterdir()) == \
        ["atlas.json", "documents.jsonl", "plot.png", "report.html", "tensors.safetensors", "vocab.json"]


@pytest.mark.parametrize("name", ["atlas.json", "tensors.safetensors", "documents.jsonl", "vocab.json",
                                  "report.html", "plot.png"])
def test_every_corruption_of_every_atlas_file_is_refused(atlas_folder, name, scratch) -> None:
    folder = scratch / "a"
    shutil.copytree(atlas_folder, folder)
    data = (atlas_folder / name).read_bytes()
    accepted = []
    for label, bad in _variants(data):
        (folder / name).write_bytes(bad)
        if _atlas_refuses(folder) is None:
            accepted.append(label)
    assert not accepted, f"{name}: {len(accepted)} corruptions accepted, e.g. {accepted[:5]}"


def test_every_corruption_of_a_recipe_is_refused(recipe_file, scratch) -> None:
    data = recipe_file.read_bytes()
    path = scratch / "r.safetensors"
    accepted = []
    for label, bad in _variants(data):
        path.write_bytes(bad)
        if _recipe_refuses(path) is None:
            accepted.append(label)
    assert not accepted, f"{len(accepted)} corruptions accepted, e.g. {accepted[:5]}"


@settings(max_examples=150, deadline=None, derandomize=True)
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255),
       name=st.sampled_from(["atlas.json", "tensors.safetensors", "documents.jsonl", "vocab.json", "report.html",
                             "plot.png", "recipe"]))
def test_any_flipped_byte_is_refused(atlas_folder, recipe_file, tmp_path_factory, where, mask, name) -> None:
    src = recipe_file if name == "recipe" else atlas_folder / name
    data = bytearray(src.read_bytes())
    data[int(where * len(data))] ^= mask
    if name == "recipe":
        path = tmp_path_factory.mktemp("r") / "r.safetensors"
        path.write_bytes(bytes(data))
        assert _recipe_refuses(path) is not None
    else:
        folder = tmp_path_factory.mktemp("a") / "a"
        shutil.copytree(atlas_folder, folder)
        (folder / name).write_bytes(bytes(data))
        assert _atlas_refuses(folder) is not None


def test_an_atlas_from_before_the_header_checksum_is_refused_with_a_rebuild_hint(atlas_folder, tmp_path) -> None:
    folder = tmp_path / "old"
    shutil.copytree(atlas_folder, folder)
    header = json.loads((folder / "atlas.json").read_text(encoding="utf-8"))
    header["format_version"] = 1
    header.pop("header_sha256", None)
    (folder / "atlas.json").write_text(json.dumps(header, indent=1), encoding="utf-8")
    with pytest.raises(interp.AtlasError, match="rebuild"):
        load_atlas(folder)


def test_a_recipe_from_before_the_file_checksum_is_refused_with_a_save_again_hint(recipe_file, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    header, _ = read_recipe(recipe_file)
    del header["file_sha256"]
    header["version"] = 1
    save_file(load_file(str(recipe_file)), str(tmp_path / "old.safetensors"),
              metadata={"interp_recipe": json.dumps(header)})
    with pytest.raises(RecipeError, match="save it again"):
        read_recipe(tmp_path / "old.safetensors")
