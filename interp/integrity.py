"""Self-sealed files: a file that carries the sha256 of its own bytes.

A writer puts `PLACEHOLDER` (64 zeros) where the digest goes, before any other 64-zero run
(atlas.json and recipes put it first in their header); `seal` hashes the bytes and writes the hex
digest over the placeholder (same length, so nothing else moves). `is_sealed` writes the zeros back
over the first occurrence of the claimed digest and hashes again. So every byte is covered: a
changed digest no longer matches the bytes, and any other change alters the hash. A canonical-JSON
digest would not do: a space flipped to a tab, or `1e-05` to `1E-05`, parses to the same values.
"""

from __future__ import annotations

import hashlib
import re

PLACEHOLDER = "0" * 64
_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(data: bytes) -> bytes:
    """`data` with its first `PLACEHOLDER` replaced by the sha256 of `data` (ValueError if none)."""
    at = data.find(PLACEHOLDER.encode())
    if at < 0:
        raise ValueError("nothing to seal: the data has no digest placeholder")
    digest = hashlib.sha256(data).hexdigest().encode()
    return data[:at] + digest + data[at + len(digest):]


def is_sealed(data: bytes, claimed: object) -> bool:
    """Whether `claimed` (the digest the file's header states) is the seal of `data`."""
    if not isinstance(claimed, str) or not _HEX.fullmatch(claimed):
        return False
    at = data.find(claimed.encode())
    if at < 0:
        return False
    blank = data[:at] + PLACEHOLDER.encode() + data[at + 64:]
    return hashlib.sha256(blank).hexdigest() == claimed
