"""`--dtype auto` (the default of `interp analyze`): bfloat16 only where it runs natively (a CPU with
AVX512-BF16 or AMX-BF16, or a GPU with bfloat16), float32 elsewhere; the atlas records what ran."""

from __future__ import annotations

import json

import pytest
import torch

from interp import models
from interp.models import auto_dtype, native_bf16

X86_AVX2 = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}
X86_AVX512 = {"avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}  # Skylake-X: emulated
X86_AVX512_BF16 = {**X86_AVX512, "avx512_bf16": True}  # Cooper Lake, Zen 4
X86_AMX = {**X86_AVX512, "amx_bf16": True}  # Sapphire Rapids with avx512_bf16 masked off


@pytest.mark.parametrize("flags, want", [(X86_AVX2, torch.float32), (X86_AVX512, torch.float32),
                                         (X86_AVX512_BF16, torch.bfloat16), (X86_AMX, torch.bfloat16),
                                         ({}, torch.float32)])
def test_cpu_rule(flags, want, monkeypatch) -> None:
    monkeypatch.setattr(models, "_cpu_flags", lambda: flags)
    assert auto_dtype("cpu") == want
    assert native_bf16() == (want == torch.bfloat16)


@pytest.mark.parametrize("bf16, want", [(True, torch.bfloat16), (False, torch.float32)])
def test_gpu_rule(bf16, want, monkeypatch) -> None:
    monkeypatch.setattr(models, "_cpu_flags", lambda: X86_AVX2)  # the host CPU does not matter for a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert auto_dtype("cuda") == want


def test_the_testbed_uses_the_same_rule(monkeypatch) -> None:
    from testbeds import vlm

    for flags, want in ((X86_AVX512, "float32"), (X86_AMX, "bfloat16")):
        monkeypatch.setattr(models, "_cpu_flags", lambda flags=flags: flags)
        assert vlm.TestbedSpec.for_run(reduced=True).autocast == want


@pytest.mark.parametrize("flags, want", [(X86_AVX2, "float32"), (X86_AVX512_BF16, "bfloat16")])
def test_analyze_records_and_prints_the_resolved_dtype(flags, want, smollm2, monkeypatch, tmp_path, capsys) -> None:
    from cli.main import main

    monkeypatch.setattr(models, "_cpu_flags", lambda: flags)
    out = tmp_path / "atlas"
    assert main(["analyze", "--corpus", "demo", "--limit", "2", "--max-length", "16", "--layers", "0",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith(f"# dtype {want} (auto:"), printed
    params = json.loads((out / "atlas.json").read_text())["params"]
    assert params["dtype"] == want and params["dtype_requested"] == "auto"
    assert main(["analyze", "--corpus", "demo", "--limit", "2", "--max-length", "16", "--layers", "0",
                 "--dtype", "float32", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("# dtype float32 (--dtype float32)")
    params = json.loads((out / "atlas.json").read_text())["params"]
    assert params["dtype"] == "float32" and params["dtype_requested"] == "float32"
