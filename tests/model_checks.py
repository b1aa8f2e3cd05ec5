"""Checks on a model's state shared by the tests: a hash of every weight, to assert bit-for-bit restores."""

from __future__ import annotations

import hashlib

import torch


def weight_hash(model) -> str:
    """sha256 over every state-dict entry's name and raw bytes (any dtype)."""
    h = hashlib.sha256()
    for name, p in sorted(model.hf.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
