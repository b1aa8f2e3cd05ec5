"""The on-disk cache (`~/.cache/interp`, or `$INTERP_CACHE`) and atomic writes.

Everything we write goes to a temporary sibling first and is renamed into
place, so an interrupted run never leaves a half-written file or folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def cache_dir() -> Path:
    root = Path(os.environ.get("INTERP_CACHE") or Path.home() / ".cache" / "interp").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def atomic_path(target: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` on success.

    On an exception the temporary file or folder is removed and `target` is
    left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)  # mkdtemp/mkstemp make them private
        if directory:
            for f in tmp.rglob("*"):
                os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
        if directory and target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def build_lock(target: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock beside `target` (`.<name>.lock`) while building it.

    Two processes that want the same cache entry (two test workers, two notebooks) then build
    it once: the second waits, re-checks, and finds it built. Advisory (flock); a no-op where
    flock does not exist.
    """
    target = Path(target)
    if sys.platform == "win32":
        yield
        return
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def source_identity(source: Path) -> dict:
    """What identifies a source file's content cheaply: name, size, sha256 of its first and last MiB.

    Not its path or mtime: two virtual environments installing the same package
    must share one cache entry instead of rebuilding it in turn.
    """
    size = source.stat().st_size
    h = hashlib.sha256()
    with source.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return {"name": source.name, "size": size, "head_tail_sha256": h.hexdigest()}


def cached_folder(key: str, source: Path, build: Callable[[Path], None]) -> Path:
    """Return `cache/models/<key>`, building it with `build(tmp_dir)` if absent or stale.

    Staleness is judged by the source file's identity (`source_identity`),
    recorded in `source.json` inside the folder.
    """
    folder = cache_dir() / "models" / key
    stamp = source_identity(source)
    marker = folder / "source.json"

    def fresh() -> bool:
        try:
            return json.loads(marker.read_text()) == stamp
        except (OSError, ValueError):
            return False

    if fresh():
        return folder
    with build_lock(folder):
        if fresh():  # another process built it while we waited
            return folder
        with atomic_path(folder, directory=True) as tmp:
            build(tmp)
            (tmp / "source.json").write_text(json.dumps(stamp))
    return folder
