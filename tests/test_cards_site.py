"""Neuron cards (issue 29), the static site: `write_site` / `interp atlas cards` write data files that hold the
index's values (read back here as the page reads them), search data that ranks as `CardIndex.search` does, and a
page that Chromium opens from disk (slow test: search " dog", a card with its write tokens and a highlighted
exemplar, Spanish-specific neurons, the layer strip, a screenshot)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atlases.cards import CardIndex, merge
from atlases.cards_site import SHARDS, SPARK_BINS, write_site
from card_sources import LAYERS, VOCAB, all_atlases
from interp.errors import AtlasError

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _data(site: Path, name: str):
    """A data file's JSON, as the page gets it from `CARDS.got(name, data)`."""
    text = (site / "data" / f"{name}.js").read_text(encoding="utf-8")
    m = re.fullmatch(r'CARDS\.got\((".*?"),(.*)\);\n', text, flags=re.S)
    assert m and json.loads(m[1]) == name
    return json.loads(m[2])


@pytest.fixture(scope="module")
def index() -> CardIndex:
    atlases = all_atlases()
    lm = atlases["lm"]
    lm.tensors["blocks.7.mlp.hook_post/write.top_ids"][9, 0] = 42  # plant: 7:9 writes "tok42" most
    lm.tensors["blocks.7.mlp.hook_post/write.top_probs"][9, 0] = 5.0
    merged = None
    for atlas in atlases.values():
        merged = merge(merged, atlas)
    return CardIndex(merged)


@pytest.fixture(scope="module")
def site(index, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "cards"
    summary = write_site(index, out)
    assert summary.cards == 24 and summary.bytes == sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return out


def test_layer_files_hold_each_cards_values(index, site):
    meta = _data(site, "meta")
    assert meta["layers"] == list(LAYERS) and meta["langs"] == ["en", "es", "fr", "zh"] and not meta["neighbours"]
    vocab = _data(site, "vocab")
    docs = {int(k): v for k, v in _data(site, "docs").items()}
    for layer in LAYERS:
        d = _data(site, f"layer-{layer}")
        for n in (0, 5, 11):
            c = index.card(layer, n)
            assert [g[n] for g in d["freq"]] == pytest.approx(list(c.frequency.values()), abs=1e-4)
            assert [vocab[i] for i in d["lm"]["write"]["ids"][n]] == [t for t, _ in c.tokens["write"]]
            assert d["lm"]["up"]["p"][n] == pytest.approx([p for _, p in c.tokens["up"]], abs=1e-4)
            assert [e[0] for e in d["ex"][n]] == [e["doc"] for e in c.exemplars]
            assert all(docs[e["doc"]] == e["text"] for e in c.exemplars)  # no tokenizer: plain texts
            assert meta["classes"][d["lang"]["class"][n]] == c.language
            assert [lang for lang, m in zip(meta["langs"], (row[n] for row in d["lang"]["mask"])) if m] == c.languages
            assert meta["hftp_labels"][d["hftp"]["label"][n]] == c.hftp
            spark = d["hftp"]["spark"][n]
            assert len(spark) <= SPARK_BINS and "9" in spark and "0" in spark  # scaled to its own range
            peak = max(range(len(c.hftp_spectrum)), key=c.hftp_spectrum.__getitem__)
            assert spark[peak * len(spark) // len(c.hftp_spectrum)] == "9"
            assert d.get("milan", {}).get(str(n), [None])[0] == c.description
            assert [bool(row[n]) for row in d["shared"]] == list(c.shared.values())
        if layer == 7:
            assert meta["foxp2"][d["foxp2"]["member"][9]] == index.card(7, 9).foxp2 == "english"
        else:
            assert "foxp2" not in d


def test_search_data_ranks_as_the_index_does(index, site):
    vocab = _data(site, "vocab")
    tok = vocab.index("tok42")
    hits = _data(site, f"tokens-{tok % SHARDS}")[str(tok)]
    assert [(layer, n) for layer, n, _ in hits] == [(c.layer, c.neuron) for c in index.search(token="tok42", k=100)]
    assert hits[0][:2] == [7, 9]
    lists = _data(site, "lists")
    spanish = sorted(lists["langs"]["es"], key=lambda r: (-((r[2] == 1) + r[3] / 2), r[0], r[1]))
    assert [tuple(r[:2]) for r in spanish] == [(c.layer, c.neuron) for c in index.search(language="es", k=1000)]
    assert {tuple(r) for r in lists["labels"]["shared"]} == {(c.layer, c.neuron) for c in
                                                             index.search(label="shared", k=1000)}
    assert lists["words"]["cities"] == [[7, 5, 1.5]]
    strip = _data(site, "meta")["strip"]
    assert [c["syntax"] for c in strip] == [sum(c.hftp != "" for c in (index.card(layer, n) for n in range(12)))
                                            for layer in LAYERS]


def test_the_site_is_replaced_whole_and_never_over_a_foreign_folder(index, tmp_path):
    out = tmp_path / "cards"
    write_site(index, out)
    (out / "data" / "stale.js").write_text("x")
    write_site(index, out)
    assert not (out / "data" / "stale.js").exists()  # the old site went as a whole
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(AtlasError, match="not a cards site"):
        write_site(index, foreign)
    assert (foreign / "mine.txt").read_text() == "keep"


def test_interp_atlas_cards_writes_the_site_and_refuses_a_non_index_in_one_line(index, tmp_path):
    folder = index.atlas.save(tmp_path / "index")
    run = lambda *a: subprocess.run([sys.executable, "-m", "cli.main", "atlas", "cards", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=120, cwd=ROOT)
    ok = run(folder, "--out", tmp_path / "site", "--no-model")
    assert ok.returncode == 0, ok.stderr
    assert "24 neuron cards of m" in ok.stdout and (tmp_path / "site" / "index.html").exists()
    lm_only = all_atlases()["lm"].save(tmp_path / "lm")
    bad = run(lm_only, "--out", tmp_path / "site2", "--no-model")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "not a neuron-card index" in bad.stderr
    assert not (tmp_path / "site2").exists()


def test_neighbours_are_the_most_similar_write_directions():
    from atlases.cards_site import _neighbours

    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 10, generator=g)
    w[:, 7] = 3 * w[:, 2] + 0.01 * torch.randn(16, generator=g)  # 7 is nearly 2, scaled
    ids, cos = _neighbours(w, 3)
    assert ids[2, 0] == 7 and ids[7, 0] == 2 and cos[2, 0] > 0.99
    assert (ids != torch.arange(10).unsqueeze(1)).all()  # never itself
    assert (cos[:, :-1] >= cos[:, 1:]).all()


@pytest.fixture(scope="module")
def real_site(tmp_path_factory, smollm2):
    """smollm2's lm-head (write) and stats (demo corpus) atlases of layers 28-29 and its language neurons (en, es,
    fr; 40 verses), made by `interp analyze`, merged, and written as a site with the model."""
    from cli.main import main

    root = tmp_path_factory.mktemp("real-cards")
    runs = {"lm": ["--probe", "lm-head", "--layers", "28-29", "--directions", "write"],
            "stats": ["--corpus", "demo", "--layers", "28-29", "--max-length", "64", "--top-k", "5"],
            "lang": ["--probe", "language-neurons", "--langs", "en,es,fr", "--verses", "40", "--grid-verses", "0"]}
    for name, argv in runs.items():
        assert main(["analyze", *argv, "--quiet", "--out", str(root / name)]) == 0
    assert main(["atlas", "merge", str(root / "index"), *(str(root / n) for n in runs)]) == 0
    assert main(["atlas", "cards", str(root / "index"), "--out", str(root / "site")]) == 0
    return root


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make browser)")
def test_chromium_opens_the_site_from_disk_and_finds_dog_and_spanish_neurons(real_site):
    from playwright.sync_api import sync_playwright

    from atlases import load_atlas

    best = load_atlas(real_site / "lm").neurons_for(" dog", k=1)[0]
    index = CardIndex.load(real_site / "index")
    spanish = [(c.layer, c.neuron) for c in index.search(language="es", k=10)]
    assert index.card(*spanish[0]).language == "specific"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((real_site / "site" / "index.html").as_uri())
        page.wait_for_selector("#strip .cell")
        assert page.locator("#strip .cell").count() == 30  # the language neurons cover every layer
        page.locator("#q").fill(" dog")
        page.locator("#q").press("Enter")
        first = page.locator("#results a.result").first
        first.wait_for()
        assert (int(first.get_attribute("data-layer")), int(first.get_attribute("data-neuron"))) == (best.layer,
                                                                                                     best.neuron)
        first.click()
        page.wait_for_selector(f"#card[data-layer='{best.layer}'][data-neuron='{best.neuron}']")
        chips = page.locator("#card .tokens[data-direction=write] .chip").all_text_contents()
        assert any(t.startswith(" dog ") for t in chips), chips  # the token, then its probability
        marks = page.locator("#card .ex mark")
        assert marks.count() >= 1 and marks.first.text_content().strip()
        assert page.locator("#card .neighbours a").count() == 5
        page.locator("#q").fill("Spanish")
        page.locator("#q").press("Enter")
        page.wait_for_function("document.querySelector('#results .muted') && "
                               "document.querySelector('#results .muted').textContent.includes('Spanish')")
        shown = [(int(a.get_attribute("data-layer")), int(a.get_attribute("data-neuron")))
                 for a in page.locator("#results a.result").all()[:10]]
        assert shown == spanish
        page.locator("#q").fill("es")
        page.locator("#q").press("Enter")
        page.wait_for_function("document.querySelector('#results .muted').textContent.includes('\"es\"')")
        assert [(int(a.get_attribute("data-layer")), int(a.get_attribute("data-neuron")))
                for a in page.locator("#results a.result").all()[:10]] == spanish
        (ROOT / "tests" / "screenshots").mkdir(exist_ok=True)
        page.locator("#results a.result").first.click()
        page.wait_for_selector(f"#card[data-layer='{spanish[0][0]}'][data-neuron='{spanish[0][1]}']")
        page.screenshot(path=str(ROOT / "tests" / "screenshots" / "cards_site.png"), full_page=True)
        browser.close()
    assert not errors, errors
