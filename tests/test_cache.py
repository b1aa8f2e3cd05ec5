"""The model cache: built once per source content, shared across installs, rebuilt when the content changes."""

from __future__ import annotations

import shutil

from interp.cache import cached_folder


def test_cached_folder_follows_content_not_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    builds = []

    def build(tmp):
        builds.append(tmp)
        (tmp / "weights.bin").write_bytes(b"w")

    a = tmp_path / "venv-a" / "model.gguf"
    a.parent.mkdir()
    a.write_bytes(b"x" * 3_000_000)
    folder = cached_folder("m", a, build)
    assert (folder / "weights.bin").read_bytes() == b"w" and len(builds) == 1
    assert cached_folder("m", a, build) == folder and len(builds) == 1  # cached
    b = tmp_path / "venv-b" / "model.gguf"  # the same package installed in another environment
    b.parent.mkdir()
    shutil.copy(a, b)
    assert cached_folder("m", b, build) == folder and len(builds) == 1
    b.write_bytes(b"x" * 2_999_999 + b"y")  # new content, same size: the tail hash sees it
    cached_folder("m", b, build)
    assert len(builds) == 2
