"""Neuron cards at full size (issue 29): the index and the static site of all 30 layers × 1,536 neurons of
smollm2-135m, built from existing atlases, and the site in headless Chromium.

The source atlases (lm-head write+up over all layers; stats over the demo corpus at every layer; language neurons
of en/es/fr/de on 100 verses each; HFTP at every layer with 20 streams; MILAN descriptions of layers 28-29's first
64 neurons) are made once by `interp analyze` and kept in `--sources` (default: the interp cache); making them is
not timed. Timed, as a user runs them: `interp atlas merge INDEX <the five atlases>` then `interp atlas cards INDEX --out
SITE` (process start, loading the model for exemplar tokens and neighbours, and writing included). Then Chromium
opens the site from disk: first contentful paint (the browser's paint timing), and 12 cards opened cold (each in a
layer not yet loaded: the layer's data file, the vocabulary and the documents are fetched as part of it) by their
`#layer/neuron` links, each timed by the page's own `performance.measure("card")`.

Goals: index + site ≤ 60 s on 2 cores; first paint ≤ 1 s; the slowest cold card ≤ 200 ms; site ≤ 50 MB.

    .venv/bin/python benchmarks/cards.py [--sources DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.capture import machine  # noqa: E402
from benchmarks.goals import Goals  # noqa: E402
from benchmarks.results import publish  # noqa: E402

TITLE = "## Neuron cards: index and static site at full size (issue 29)"
GOAL_BUILD_S, GOAL_PAINT_MS, GOAL_CARD_MS, GOAL_MB = 60.0, 1000.0, 200.0, 50.0
SOURCES = {  # name → `interp analyze` arguments
    "lm": ["--probe", "lm-head"],
    "stats": ["--corpus", "demo", "--max-length", "64"],
    "lang": ["--probe", "language-neurons", "--langs", "en,es,fr,de", "--verses", "100", "--grid-verses", "0"],
    "hftp": ["--probe", "hftp", "--streams", "20", "--groups", "5", "--permutations", "200"],
    "milan": ["--probe", "milan", "--layers", "28-29", "--units", "64"],
}
CARDS_OPENED = 12


def interp(*argv: str, quiet: bool = True) -> float:
    """Run the CLI as a user does; its wall time in seconds."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "cli.main", *argv, *(["--quiet"] if quiet else [])]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def make_sources(folder: Path) -> list[Path]:
    """The source atlases, made once (atomic folders: a finished one is whole)."""
    out = []
    for name, argv in SOURCES.items():
        target = folder / name
        if not (target / "atlas.json").exists():
            print(f"making the {name} atlas (once) ...", flush=True)
            print(f"  {interp('analyze', *argv, '--out', str(target)):.0f} s", flush=True)
        out.append(target)
    return out


def browse(site: Path) -> tuple[float, list[float], list[str]]:
    """(first contentful paint ms, cold card-open ms per card, page errors) in headless Chromium from disk."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium is not installed (make browser)")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((site / "index.html").as_uri())
        page.wait_for_selector("#strip .cell")
        paint = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
        for i in range(CARDS_OPENED):
            layer, neuron = (7 + 11 * i) % 30, (97 * i + 13) % 1536  # 12 different layers: each opened cold
            page.evaluate(f"location.hash = '#{layer}/{neuron}'")
            page.wait_for_selector(f"#card[data-layer='{layer}'][data-neuron='{neuron}']")
        times = page.evaluate("window.cardTimes")
        browser.close()
    return float(paint if paint is not None else "nan"), times, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "interp" / "bench" / "cards-sources", help="where the source atlases are kept")
    ap.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = ap.parse_args()

    sources = make_sources(args.sources)
    with tempfile.TemporaryDirectory(prefix="cards-bench-") as tmp:
        index, site = Path(tmp) / "index", Path(tmp) / "site"
        merge_s = interp("atlas", "merge", str(index), *map(str, sources), quiet=False)
        site_s = interp("atlas", "cards", str(index), "--out", str(site), quiet=False)
        files = [f for f in site.rglob("*") if f.is_file()]
        size_mb = sum(f.stat().st_size for f in files) / 2**20
        largest = max(files, key=lambda f: f.stat().st_size)
        largest_name, largest_mb = largest.name, largest.stat().st_size / 2**20
        paint, cards, errors = browse(site)

    goals = Goals("cards")
    goals.at_most("index + site for 30 × 1,536 neurons (s, 2 cores)", merge_s + site_s, GOAL_BUILD_S, fmt=".1f")
    goals.at_most("first contentful paint from disk (ms)", paint, GOAL_PAINT_MS, fmt=".0f")
    goals.at_most(f"slowest of {len(cards)} cold card opens (ms)", max(cards), GOAL_CARD_MS, fmt=".0f")
    goals.at_most("site size (MB)", size_mb, GOAL_MB, fmt=".1f")
    goals.check("page errors in Chromium", str(len(errors)), "0", ok=not errors)
    text = "\n".join([
        TITLE, "",
        f"{datetime.date.today()}, {machine()}; "
        "smollm2-135m, 30 layers × 1,536 neurons, from lm-head (write, up), stats (demo corpus), language "
        "neurons (en, es, fr, de), HFTP and MILAN (layers 28-29, 64 neurons) atlases. `benchmarks/cards.py`.", "",
        "| step | measured | goal |", "|---|---|---|",
        f"| `interp atlas merge` (5 atlases) | {merge_s:.1f} s | |",
        f"| `interp atlas cards` (model loaded: tokens, neighbours) | {site_s:.1f} s | |",
        f"| index + site | {merge_s + site_s:.1f} s | ≤ {GOAL_BUILD_S:.0f} s |",
        f"| site size | {size_mb:.1f} MB in {len(files)} files (largest {largest_name}, {largest_mb:.1f} MB) "
        f"| ≤ {GOAL_MB:.0f} MB |",
        f"| first contentful paint (Chromium, from disk) | {paint:.0f} ms | ≤ {GOAL_PAINT_MS:.0f} ms |",
        f"| card open, cold layer (median / slowest of {len(cards)}) | {statistics.median(cards):.0f} / "
        f"{max(cards):.0f} ms | ≤ {GOAL_CARD_MS:.0f} ms |",
    ])
    publish(TITLE, text, write=not args.no_write)
    return goals.finish()


if __name__ == "__main__":
    raise SystemExit(main())
