"""The atlas folder: round trip, checksums, model check, atomic replace."""

from __future__ import annotations

import json

import pytest
import torch

from atlases import Atlas, load_atlas
from interp import AtlasError


def _atlas(model="m1"):
    g = torch.Generator().manual_seed(0)
    tensors = {"blocks.0.mlp.hook_post/frequency": torch.rand(2, 8, generator=g),
               "blocks.0.mlp.hook_post/topk_doc": torch.arange(16).view(8, 2)}
    return Atlas(model=model, sites=["blocks.0.mlp.hook_post"], method="test", tensors=tensors,
                 params={"k": 2}, documents=[{"index": 3, "text": "héllo wörld", "group": "de"}])


def test_round_trip(tmp_path):
    a = _atlas()
    a.save(tmp_path / "a", extra_files={"report.html": "<p>hi</p>"})
    b = load_atlas(tmp_path / "a", model="m1")
    assert b.model == "m1" and b.sites == a.sites and b.params == {"k": 2}
    for k, v in a.tensors.items():
        assert torch.equal(b.tensors[k], v)
    assert b.document(3)["text"] == "héllo wörld"
    header = json.loads((tmp_path / "a" / "atlas.json").read_text())
    assert set(header["checksums"]) == {"tensors.safetensors", "documents.jsonl", "report.html"}
    assert header["library"]["torch"] == torch.__version__
    with pytest.raises(AtlasError, match="has frequency, topk_doc"):
        b.get("blocks.0.mlp.hook_post", "mean")


def test_tampered_file_and_wrong_model_are_refused(tmp_path):
    _atlas().save(tmp_path / "a")
    with pytest.raises(AtlasError, match="made for model 'm1', not 'm2'"):
        load_atlas(tmp_path / "a", model="m2")
    data = bytearray((tmp_path / "a" / "tensors.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "a" / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.raises(AtlasError, match="checksum"):
        load_atlas(tmp_path / "a")
    with pytest.raises(AtlasError, match="no atlas.json"):
        load_atlas(tmp_path)


def test_replace_is_atomic_and_refuses_foreign_folders(tmp_path, monkeypatch):
    _atlas("old").save(tmp_path / "a")
    bad = _atlas("new")
    bad.tensors["x/broken"] = "not a tensor"  # makes the write fail half-way
    with pytest.raises(Exception):
        bad.save(tmp_path / "a")
    assert load_atlas(tmp_path / "a").model == "old"  # the old atlas is intact
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(AtlasError, match="not an atlas"):
        _atlas().save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
