"""Writing one benchmark's section of benchmarks/RESULTS.md, keeping the others."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(title: str, text: str) -> None:
    """Replace (or append) the section whose heading line is `title` (text starts with it)."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = old.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = [""] + lines[end:] if end < len(lines) else []
        new = "\n".join(lines[:start] + text.rstrip("\n").splitlines() + tail) + "\n"
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(RESULTS)


def publish(title: str, text: str, *, write: bool = True) -> None:
    """Print a benchmark's section and, unless told not to, write it into RESULTS.md."""
    print(text)
    if write:
        write_section(title, text)
