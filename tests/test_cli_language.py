"""`interp analyze --probe language-neurons`: masks, categories, grid and plots in an atlas; bad input exits 2."""

from __future__ import annotations

import pytest
import torch

from atlases import load_atlas
from cli.main import main
from cli_checks import run_cli
from probes.language_counts import bible_texts, language_counts
from probes.language_neurons import identify

LANGS = ["en", "es", "fr"]


@pytest.mark.slow
def test_analyze_language_neurons_writes_masks_grid_and_plots(smollm2, tmp_path, capsys) -> None:
    out = tmp_path / "ln"
    code = main(["analyze", "--probe", "language-neurons", "--langs", ",".join(LANGS), "--verses", "40",
                 "--grid-verses", "4", "--dtype", "float32", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    atlas = load_atlas(out, model=smollm2.name)
    p = atlas.params
    assert atlas.method == "language-neurons/zhang2025" and p["langs"] == LANGS
    # the atlas holds what the Python API finds on the same texts
    counts, _ = language_counts(smollm2, bible_texts(LANGS, limit=40))
    want = identify(counts)
    got = torch.stack([atlas.get(f"blocks.{l}.mlp.hook_pre", "masks") for l in range(30)], dim=1)
    assert torch.equal(got, want.masks) and p["per_language"] == want.per_language()
    assert p["count_by_languages"] == want.count_by_languages() and p["lam"] == want.lam
    assert len(p["grid"]["ppl"]) == len(LANGS) + 1 and p["grid"]["sizes"][0] == 0
    assert (out / "grid.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "distribution.png").read_bytes().startswith(b"\x89PNG")
    html = (out / "report.html").read_text()
    assert "Language neurons" in html and "data:image/png;base64," in html
    assert "deactivated" in printed


BAD = [
    (["--langs", "en"], "at least two"),
    (["--langs", "en,en"], "at least two different"),
    (["--langs", "en,es", "--lang-files", "en=x.txt"], "--lang-files covers"),
    (["--langs", "en,es", "--lang-files", "en"], "bad --lang-files entry"),
    (["--langs", "en,es", "--versions", "es"], "bad --versions entry"),
    (["--langs", "en,es", "--corpus", "demo"], "parallel Bible"),
    ([], "needs --langs"),
    (["--langs", "en,es", "--lang-files", "en={short},es={short}", "--grid-verses", "3"], "holds out"),
]


SUBPROCESS = {"parallel Bible"}  # one case through the real entry point; the rest in-process (same main())


@pytest.mark.parametrize("argv,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_input_exits_2(argv, needle, tmp_path, capsys) -> None:
    short = tmp_path / "short.txt"
    short.write_text("one\n\ntwo\n\nthree\n")  # 3 documents: none left to count after holding out 3
    argv = [a.replace("{short}", str(short)) for a in argv]
    code, _, err = run_cli(["analyze", "--probe", "language-neurons", *argv, "--out", str(tmp_path / "out")], capsys,
                           real=needle in SUBPROCESS)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and needle.lower() in lines[0].lower(), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_lang_files_hold_out_the_grid_documents(smollm2, tmp_path, capsys) -> None:
    """With --lang-files, the grid's documents are each file's last ones, and they are never counted."""
    docs = bible_texts(["en", "es"], limit=24, offset=100)
    for lang in docs:
        (tmp_path / f"{lang}.txt").write_text("\n\n".join(docs[lang]) + "\n", encoding="utf-8")
    out = tmp_path / "ln"
    code = main(["analyze", "--probe", "language-neurons", "--langs", "en,es", "--lang-files",
                 f"en={tmp_path / 'en.txt'},es={tmp_path / 'es.txt'}", "--grid-verses", "4", "--dtype", "float32",
                 "--quiet", "--out", str(out)])
    capsys.readouterr()
    assert code == 0
    atlas = load_atlas(out)
    counted, _ = language_counts(smollm2, {l: docs[l][:20] for l in docs})
    got = torch.stack([atlas.get(f"blocks.{l}.mlp.hook_pre", "counts") for l in range(30)], dim=1)
    assert torch.equal(got, counted.counts) and atlas.params["tokens_per_language"] == counted.tokens.tolist()
    assert len(atlas.params["grid"]["ppl"]) == 3
