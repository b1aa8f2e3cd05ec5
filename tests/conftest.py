"""Shared fixtures: the real default model, loaded once per worker, and expensive results computed once
per test run (across pytest-xdist workers) and shared through files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: each worker (and every CLI subprocess it starts)
    # gets one thread, or the workers' thread pools fight over the cores and PyTorch slows 10×.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)

T = TypeVar("T")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, worker_id) -> Path:
    """A folder shared by every worker of this test run (xdist's basetemp parent), for results that one
    worker computes and the others read (`once`)."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "shared-results"
    root.mkdir(exist_ok=True)
    return root


def once(run_dir: Path, name: str, build: Callable[[Path], None], load: Callable[[Path], T]) -> T:
    """`build(folder)` once per test run, whichever worker asks first (the others wait on a lock), then
    `load(folder)` in every worker. Files only (safetensors, JSON): nothing is pickled."""
    from interp.cache import atomic_path, build_lock

    folder = run_dir / name
    with build_lock(folder):
        if not folder.exists():
            with atomic_path(folder, directory=True) as tmp:
                build(tmp)
    return load(folder)


@pytest.fixture(scope="session")
def smollm2():
    import interp

    return interp.load_model("smollm2-135m")


@pytest.fixture(scope="session")
def bible_en_fr():
    from interp.corpora import bible_parallel

    par = bible_parallel(["en", "fr"], limit=24)
    return par["en"] + par["fr"]


LANGS4 = ["en", "es", "fr", "de"]


@pytest.fixture(scope="session")
def smollm2_language_counts(smollm2, run_dir):
    """(counts, frequencies) of smollm2-135m on 150 verses in en, es, fr, de: one ~45 s pass per test run,
    shared by the tests that identify its language neurons (the reducer travels as safetensors)."""
    import interp
    from probes.language_counts import bible_texts, language_counts
    from probes.language_neurons import counts_from_reducer

    def build(folder: Path) -> None:
        language_counts(smollm2, bible_texts(LANGS4, limit=150))[1].save(folder / "freq.safetensors")

    def load(folder: Path):
        freq = interp.ActivationFrequency.load(folder / "freq.safetensors")
        return counts_from_reducer(freq, LANGS4, freq.sites), freq

    return once(run_dir, "smollm2-language-counts", build, load)


@pytest.fixture(scope="session")
def small_captioner(smollm2) -> Path:
    """A test-size learned MILAN captioner's file, for `--describer FILE` (the default captioner is trained on
    1,120 synthetic neurons for 1,500 steps, ~4 min; this one on about a fifth of them for 300 steps). In the
    interp cache, built once whichever worker asks first; `benchmarks/milan_known_roles.py` judges the
    default one."""
    from probes.milan.captioner import TEST_SIZE, captioner_file

    return captioner_file(smollm2.tokenizer, *TEST_SIZE)
