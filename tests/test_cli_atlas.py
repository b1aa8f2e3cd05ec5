"""`interp analyze --probe lm-head`, `interp atlas query|compare`, `interp steer --concept`.

One lm-head atlas of smollm2's last two layers is written once for the module
(weights only, a few seconds) and read back by the commands; what they print
must equal what the Python API answers.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from atlases import load_atlas
from cli_checks import run_cli
from cli.main import main
from probes.lm_head import LMHeadOptions, lm_head_map, map_concept_neurons

LAYERS = "28-29"


@pytest.fixture(scope="module")
def lm_atlas(tmp_path_factory, smollm2):
    out = tmp_path_factory.mktemp("lm") / "atlas"
    code = main(["analyze", "--probe", "lm-head", "--layers", LAYERS, "--directions", "write,up", "--quiet",
                 "--out", str(out)])
    assert code == 0
    return out


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_analyze_lm_head_writes_a_queryable_atlas(lm_atlas, smollm2):
    atlas = load_atlas(lm_atlas, model=smollm2.name)
    assert atlas.method == "lm-head" and atlas.sites == ["blocks.28.mlp.hook_post", "blocks.29.mlp.hook_post"]
    assert atlas.params["directions"] == ["write", "up"] and atlas.params["final_norm"] is True
    assert atlas.get("blocks.29.mlp.hook_post", "write.top_ids").shape == (1536, 10)
    assert len(atlas.vocab) == 49152 and atlas.vocab[smollm2.tokenizer.encode(" dog")[0]] == " dog"
    html = (lm_atlas / "report.html").read_text()
    assert '<input id="q"' in html and "<script src" not in html  # self-contained


def test_atlas_query_token_and_neuron(lm_atlas, capsys):
    atlas = load_atlas(lm_atlas)
    out = _run(["atlas", "query", str(lm_atlas), "--token", " dog", "--k", "5"], capsys)
    rows = [l.split("\t") for l in out.splitlines() if not l.startswith(("#", "layer"))]
    want = atlas.neurons_for(" dog", k=5)
    assert [(int(r[0]), int(r[1])) for r in rows] == [(h.layer, h.neuron) for h in want]
    layer, neuron = want[0].layer, want[0].neuron
    out = _run(["atlas", "query", str(lm_atlas), "--neuron", f"{layer}:{neuron}", "--direction", "write"], capsys)
    toks = [eval(l.split("\t")[0]) for l in out.splitlines() if not l.startswith(("#", "token"))]  # repr'd strings
    assert toks == [t.token for t in atlas.tokens_for(layer, neuron)]


def test_atlas_compare_self(lm_atlas, capsys):
    out = _run(["atlas", "compare", str(lm_atlas), str(lm_atlas)], capsys)
    assert "100.0% of neurons keep their top token (0 moved)" in out


def test_report_search_in_a_real_browser(lm_atlas, smollm2):
    """Headless Chromium runs the page's script: searching ' city' lists the atlas's city neurons, best first."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (apt install chromium) — the report's search runs in a browser")
    url = (lm_atlas / "report.html").resolve().as_uri() + "#q=%20city&exact=1"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    rows = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td>", proc.stdout)
    assert rows, proc.stderr[-2000:]
    atlas = load_atlas(lm_atlas)
    in_lists = [(h.layer, h.neuron) for h in atlas.neurons_for(" city", k=50) if 0 <= h.rank < 5]  # 5 shown
    assert in_lists
    assert [(int(l), int(n)) for l, n in rows][: len(in_lists)] == in_lists


@pytest.mark.slow
def test_steer_concept_clamps_the_dog_neuron(lm_atlas, smollm2, capsys):
    out = _run(["steer", "--prompt", "My favourite animal is the", "--concept", " dog", "--atlas", str(lm_atlas),
                "--max-new-tokens", "12", "--compare"], capsys)
    ids = smollm2.tokenizer.encode(" dog", add_special_tokens=False)
    m = lm_head_map(smollm2, [28, 29], LMHeadOptions(directions=("write",)))
    layer, neuron, _ = map_concept_neurons(smollm2, m, ids, k=1)[0]
    assert f"concept neuron: blocks.{layer}.mlp.hook_post[{neuron}]" in out
    assert re.search(r"× baseline", out)
    assert "the ' dog' neuron" in out


@pytest.mark.slow
def test_steer_concept_by_the_up_direction_clamps_the_up_proj_output(lm_atlas, smollm2, capsys):
    """--direction up (issue 30): the neuron whose read (up_proj row) direction most means the token, clamped at
    mlp.hook_pre_linear, the up_proj output."""
    out = _run(["steer", "--prompt", "My favourite animal is the", "--concept", " dog", "--direction", "up",
                "--atlas", str(lm_atlas), "--sweep", "0,10", "--max-new-tokens", "4"], capsys)
    ids = smollm2.tokenizer.encode(" dog", add_special_tokens=False)
    m = lm_head_map(smollm2, [28, 29], LMHeadOptions(directions=("up",)))
    layer, neuron, _ = map_concept_neurons(smollm2, m, ids, direction="up", k=1)[0]
    assert f"concept neuron: blocks.{layer}.mlp.hook_pre_linear[{neuron}]" in out, out
    assert "from its up direction" in out and "at mlp.hook_pre_linear" in out
    assert re.search(rf"clamp blocks\.{layer}\.mlp\.hook_pre_linear\[{neuron}\] = (0|10) ", out), out


BAD = [
    (["analyze", "--probe", "lm-head", "--directions", "sideways"], "directions must be among"),
    (["analyze", "--probe", "lm-head", "--corpus", "demo"], "drop --corpus"),
    (["analyze", "--probe", "stats"], "needs --corpus"),
    (["atlas", "query", "{atlas}", "--token", " dogcatcherhood"], "not a single token"),
    (["atlas", "query", "{atlas}", "--neuron", "x:y"], "LAYER:NEURON"),
    (["atlas", "query", "{atlas}", "--token", " dog", "--neuron", "1:2"], "exactly one"),
    (["atlas", "query", "{atlas}", "--neuron", "3:0"], "not in this atlas"),
    (["atlas", "query", "{missing}", "--token", " dog"], "not an atlas"),
    (["steer", "--prompt", "Hi", "--concept", " dogcatcherhood"], "tokens for this tokenizer"),
    (["steer", "--prompt", "Hi", "--clamp-value", "3", "--clamp", "blocks.1.mlp.hook_post:1=2"], "--concept"),
    (["steer", "--prompt", "Hi", "--direction", "up", "--clamp", "blocks.1.mlp.hook_post:1=2"], "--direction goes"),
]
SUBPROCESS = {"not in this atlas"}  # run through a real `python -m cli.main`


@pytest.mark.parametrize("argv,needle", BAD, ids=[b[1] for b in BAD])
def test_bad_input_exits_2_with_one_line(argv, needle, lm_atlas, tmp_path, capsys):
    argv = [str(lm_atlas) if a == "{atlas}" else str(tmp_path / "nope") if a == "{missing}" else a for a in argv]
    if argv[0] == "analyze":
        argv += ["--out", str(tmp_path / "out")]
    code, _, err = run_cli(argv, capsys, real=needle in SUBPROCESS)
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and needle.lower() in lines[0].lower(), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
