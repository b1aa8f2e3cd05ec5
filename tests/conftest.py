"""Shared fixtures: the real default model, loaded once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: each worker (and every CLI subprocess it starts)
    # gets one thread, or the workers' thread pools fight over the cores and PyTorch slows 10×.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2():
    import interp

    return interp.load_model("smollm2-135m")


@pytest.fixture(scope="session")
def bible_en_fr():
    from interp.corpora import bible_parallel

    par = bible_parallel(["en", "fr"], limit=24)
    return par["en"] + par["fr"]


@pytest.fixture(scope="session")
def smollm2_language_counts(smollm2):
    """(counts, frequencies) of smollm2-135m on 150 verses in en, es, fr, de: shared by the tests that
    identify its language neurons (one ~45 s pass per worker instead of one per test)."""
    from probes.language_counts import bible_texts, language_counts

    return language_counts(smollm2, bible_texts(["en", "es", "fr", "de"], limit=150))
