"""Writing one benchmark's section of benchmarks/RESULTS.md, keeping the others."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(title: str, text: str) -> None:
    """Replace (or append) the section whose heading line is `title` (text starts with it). Benchmarks that
    run side by side (`run_all.py --jobs`) take turns: the read-modify-write holds a lock."""
    from interp.cache import build_lock

    with build_lock(RESULTS):
        _replace_section(title, text)


def _replace_section(title: str, text: str) -> None:
    from interp.cache import write_text_atomic

    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = old.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = [""] + lines[end:] if end < len(lines) else []
        new = "\n".join(lines[:start] + text.rstrip("\n").splitlines() + tail) + "\n"
    write_text_atomic(RESULTS, new)


def publish(title: str, text: str, *, write: bool = True) -> None:
    """Print a benchmark's section and, unless told not to, write it into RESULTS.md."""
    print(text)
    if write:
        write_section(title, text)


def cpu_flags() -> str:
    """The CPU's matrix-relevant flags (what decides native bfloat16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    keep = [f for f in flags if f.startswith(("avx", "amx", "fma"))]
    return " ".join(keep) or "none of avx/amx/fma"
