"""Shared fixtures: the real default model, loaded once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub


@pytest.fixture(scope="session")
def smollm2():
    import interp

    return interp.load_model("smollm2-135m")


@pytest.fixture(scope="session")
def bible_en_fr():
    from interp.corpora import bible_parallel

    par = bible_parallel(["en", "fr"], limit=24)
    return par["en"] + par["fr"]
