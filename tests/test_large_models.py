"""Large models (issue 13): a model split across devices (half its layers offloaded to disk, their
weights on `meta` until each forward) captures and steers exactly as the unsplit model does;
memory estimates."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.memory import LLAMA_31_8B, estimate
from interp.runs import reducer_tensors, stream

SITES = ["blocks.3.mlp.hook_post", "blocks.20.mlp.hook_post", "blocks.25.hook_resid_post"]
PROMPTS = ["The cat sat on the", "In the beginning"]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """smollm2-135m with layers 0-14 on the CPU and 15-29 offloaded to disk (accelerate hooks)."""
    n = 30
    device_map = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu",
                  **{f"model.layers.{i}": "cpu" if i < n // 2 else "disk" for i in range(n)}}
    return interp.load_model("smollm2-135m", device_map=device_map,
                             offload_folder=tmp_path_factory.mktemp("offload"))


def test_the_split_model_really_is_split(split) -> None:
    assert split.device_map["model.layers.20"] == "disk" and split.device_map["model.layers.3"] == "cpu"
    assert split.hf.model.layers[20].mlp.down_proj.weight.device.type == "meta"  # loaded only while it runs
    assert split.device.type == "cpu"


def test_split_capture_equals_unsplit(smollm2, split) -> None:
    a, b = interp.run_with_cache(smollm2, PROMPTS, SITES), interp.run_with_cache(split, PROMPTS, SITES)
    assert all(torch.equal(a[s], b[s]) for s in SITES)
    runs = []
    for model in (smollm2, split):
        with interp.capture(model, SITES, [interp.Moments(), interp.TopK(3)]) as run:
            stream(run, PROMPTS * 3, batch_size=2, progress=False)
        runs.append(reducer_tensors(run))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_split_steering_equals_unsplit_and_restores(smollm2, split) -> None:
    g = torch.Generator().manual_seed(0)
    edits = [interp.Clamp("blocks.20.mlp.hook_post", [5, 7], [3.0, -2.0]),  # on an offloaded layer
             interp.Add("blocks.4.hook_resid_post", torch.randn(576, generator=g), 2.0),
             interp.Ablate("blocks.22.mlp.hook_post", torch.randn(1, 1536, generator=g))]
    ids = smollm2.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    logits = []
    for model in (smollm2, split):
        with interp.edit(model, edits), torch.inference_mode():
            logits.append(model.hf(input_ids=ids).logits)
    assert torch.equal(logits[0], logits[1])
    assert interp.generate(split, PROMPTS, edits, max_new_tokens=8) == \
        interp.generate(smollm2, PROMPTS, edits, max_new_tokens=8)
    with torch.inference_mode():  # hooks gone: the split model is itself again
        assert torch.equal(split.hf(input_ids=ids).logits, smollm2.hf(input_ids=ids).logits)
        assert not torch.equal(split.hf(input_ids=ids).logits, logits[1])


def test_auto_device_map_with_a_memory_cap_offloads(tmp_path) -> None:
    model = interp.load_model("smollm2-135m", device_map="auto", max_memory={"cpu": "250MB"},
                              offload_folder=tmp_path)
    assert "disk" in set(model.device_map.values())
    out = interp.run_with_cache(model, PROMPTS[:1], ["blocks.29.mlp.hook_post"])["blocks.29.mlp.hook_post"]
    assert out.shape[-1] == 1536 and torch.isfinite(out).all()


def test_placement_arguments_are_checked() -> None:
    with pytest.raises(interp.InterpError, match="device_map"):
        interp.load_model("smollm2-135m", offload_folder="/tmp/x")
    with pytest.raises(interp.InterpError, match="unknown device_map"):
        interp.load_model("smollm2-135m", device_map="everywhere")
    with pytest.raises(interp.InterpError, match="either device or device_map"):
        interp.load_model("smollm2-135m", device="cpu", device_map="auto")


def test_memory_estimate_of_a_known_model(smollm2) -> None:
    e = estimate(smollm2.hf.config, dtype="float32", sites=smollm2.adapter.expand("mlp.hook_post"))
    assert abs(e.parameters - sum(p.numel() for p in smollm2.hf.parameters())) < 1e-3 * e.parameters
    big = estimate(LLAMA_31_8B, dtype="bfloat16", sites=[f"blocks.{i}.mlp.hook_post" for i in range(32)])
    assert 8.0e9 < big.parameters < 8.1e9 and 15e9 < big.weight_bytes < 16.2e9  # the published 8.03 B
    # reducer state: what a real statistics run holds, byte for byte
    sites = ["blocks.2.mlp.hook_post", "blocks.5.hook_resid_post"]
    reducers = [interp.ActivationFrequency(), interp.Moments(), interp.TopK(16)]
    with interp.capture(smollm2, sites, reducers) as run:
        run.feed(PROMPTS, progress=False)
    held = sum(t.nbytes for r in reducers for st in r.state.values() for t in st.values())
    assert estimate(smollm2.hf.config, sites=sites).reducer_bytes == held
    assert big.reducer_bytes > 32 * 14336 * 16 * 20  # 16 exemplars × (value, document, position) per unit


def test_cli_device_map_writes_the_same_atlas(tmp_path, capsys) -> None:
    import json

    from atlases import load_atlas
    from cli.main import main

    spec = tmp_path / "map.json"
    spec.write_text(json.dumps({"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
                                "lm_head": "cpu", **{f"model.layers.{i}": "cpu" if i < 2 else "disk"
                                                     for i in range(30)}}))
    args = ["analyze", "--corpus", "demo", "--limit", "6", "--layers", "1,4", "--dtype", "float32", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--device-map", str(spec), "--offload-folder", str(tmp_path / "off"),
                 "--out", str(tmp_path / "b")]) == 0
    a, b = load_atlas(tmp_path / "a"), load_atlas(tmp_path / "b")
    assert all(torch.equal(v, b.tensors[k]) for k, v in a.tensors.items())
    capsys.readouterr()
    for bad in (["--offload-folder", str(tmp_path)], ["--device-map", str(tmp_path / "none.json")],
                ["--device-map", "everywhere"]):
        assert main([*args, *bad, "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("device" in err.lower() or "offload" in err.lower()), err
        assert not (tmp_path / "c").exists()
