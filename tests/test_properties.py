"""Hostile input, property-based (issue 13): whatever the arguments or file contents, the CLI ends with
exit code 0 or 2, never a traceback, and never leaves a partial output: after a failure the --out
folder does not exist; after a success it holds a whole, loadable atlas or recipe. A corrupted
atlas or recipe (truncated, a byte flipped, bytes appended) is always refused: exit 2, one line.

Hypothesis draws argument lists from each option's valid and hostile values (negative, zero,
huge, empty, unknown, non-UTF-8 files) and file contents from random bytes, random JSON and
valid files corrupted (truncated, bytes flipped). Model loads are memoised (same real models).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import interp
from cli.main import main

pytestmark = pytest.mark.slow  # a few hundred real CLI runs on smollm2
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _memoised_models(monkeypatch):
    """interp.load_model, memoised per model and dtype (the real loader; each loaded once per session)."""
    real = interp.models.load_model
    cache = _memoised_models.cache

    def load(spec=interp.DEFAULT_MODEL, dtype=None, device=None, **kw):
        if kw:  # a placement (device_map): load afresh, do not keep it
            return real(spec, dtype, device, **kw)
        key = (str(spec), str(dtype), str(device))
        if key not in cache:
            cache[key] = real(spec, dtype, device, **kw)  # errors are raised, not cached
        return cache[key]

    monkeypatch.setattr(interp, "load_model", load)


_memoised_models.cache = {}


def _fresh(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("p")


def _ends_well(argv: list[str], out: Path, capsys, check_output) -> int:
    """Run the CLI; assert exit 0/2 with at most a one-line error, and whole-or-nothing output."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects the arguments themselves: exit 2, one line
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err[-2000:])
    assert "Traceback" not in err, (argv, err[-3000:])
    if code == 2:
        assert err.strip().count("\n") == 0 and "error" in err, (argv, err)
        assert not out.exists(), (argv, sorted(p.name for p in out.parent.iterdir()))
    else:
        check_output(out)
    assert not [p for p in out.parent.iterdir() if p.name.endswith((".tmp", ".lock"))]  # no debris
    return code


def _atlas_whole(out: Path) -> None:
    from atlases import load_atlas

    load_atlas(out)  # checksums, shapes and the header all agree


# ---------------------------------------------------------------- arguments
INTS = st.one_of(st.integers(-3, 3), st.sampled_from([8, 64, 10**9, -(10**9)])).map(str)
ANALYZE_OPTIONS = {
    "--corpus": st.sampled_from(["demo", "bible:en,fr:2", "bible:en:0", "bible:xx", "bible:", "nothing.txt", "",
                                 "bible:en,en:2"]),
    "--layers": st.sampled_from(["0", "29", "30", "-1", "0-2", "5-3", "a", "", "0,0", "1,,2"]),
    "--sites": st.sampled_from(["mlp.hook_post", "hook_resid_post", "attn.hook_z", "blocks.3.mlp.hook_pre", "bogus",
                                ""]),
    "--top-k": INTS, "--batch-size": INTS, "--max-length": INTS, "--limit": INTS, "--checkpoint-every": INTS,
    "--dtype": st.sampled_from(["float32", "bfloat16", "int8"]),
    "--model": st.sampled_from(["smollm2-135m", "no-such-model", "/nonexistent/folder", "org/not-here"]),
}


@st.composite
def analyze_argv(draw):
    chosen = draw(st.dictionaries(st.sampled_from(sorted(ANALYZE_OPTIONS)), st.just(None), max_size=5))
    argv = ["analyze", "--quiet", "--corpus", "demo", "--limit", "3", "--layers", "0"]
    for name in chosen:
        argv += [name, draw(ANALYZE_OPTIONS[name])]
    return argv


@SETTINGS
@given(argv=analyze_argv())
def test_analyze_arguments_never_crash_or_leave_debris(argv, tmp_path_factory, capsys) -> None:
    base = _fresh(tmp_path_factory)
    out = base / "atlas"
    _ends_well([*argv, "--out", str(out)], out, capsys, _atlas_whole)


PROMPTS = st.one_of(st.sampled_from(["", " ", "The cat", "x" * 600, "word " * 9000, "\x00", "é" * 50]),
                    st.text(max_size=40))
STEER_OPTIONS = {
    "--clamp": st.one_of(st.sampled_from(["blocks.5.mlp.hook_post:12=4", "blocks.99.mlp.hook_post:1=1",
                                          "blocks.5.mlp.hook_post:99999=1", "blocks.5.mlp.hook_post:1=nan",
                                          "blocks.5.mlp.hook_post:1=inf", "nonsense", ":=", "blocks.5.mlp.hook_post:1=1e40"]),
                         st.text(max_size=20)),
    "--max-new-tokens": INTS,
    "--repetition-penalty": st.sampled_from(["1", "1.3", "0", "-1", "nan", "inf", "x"]),
    "--positions": st.sampled_from(["all", "prompt", "generated", "none"]),
    "--concept": st.sampled_from(["", "not-a-single-token-at-all", "\x00"]),  # (a valid one runs a clamp sweep: slow)
}


@st.composite
def steer_argv(draw):
    argv = ["steer", "--max-new-tokens", "2", "--prompt", draw(PROMPTS)]
    for name in draw(st.dictionaries(st.sampled_from(sorted(STEER_OPTIONS)), st.just(None), max_size=3)):
        argv += [name, draw(STEER_OPTIONS[name])]
    return argv


@SETTINGS
@given(argv=steer_argv())
def test_steer_arguments_never_crash(argv, tmp_path_factory, capsys) -> None:
    assume("--concept" not in argv or "--clamp" not in argv)
    base = _fresh(tmp_path_factory)
    _ends_well(argv, base / "unused", capsys, lambda out: None)


# ---------------------------------------------------------------- file contents
def _corrupt(data: bytes, how: str, where: float) -> bytes:
    i = int(where * max(len(data) - 1, 0))
    if how == "truncate":
        return data[:i]
    if how == "flip":
        return data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:] if data else data
    return data + b"\x00garbage"


@pytest.fixture(scope="module")
def good_atlas(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "atlas"
    assert main(["analyze", "--corpus", "demo", "--limit", "3", "--layers", "0", "--quiet", "--out", str(out)]) == 0
    return out


def _refused(argv: list[str], capsys) -> str:
    """Run the CLI; assert it refuses (exit 2) in one line without a traceback; return that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (argv, code, err[-2000:])
    return err.strip()


@SETTINGS
@given(name=st.sampled_from(["atlas.json", "tensors.safetensors", "documents.jsonl", "report.html"]),
       how=st.sampled_from(["truncate", "flip", "append"]), where=st.floats(0, 1))
def test_corrupted_atlas_files_are_refused_in_one_line(good_atlas, name, how, where, tmp_path_factory,
                                                       capsys) -> None:
    from atlases import load_atlas

    assert load_atlas(good_atlas).model == "smollm2-135m"  # the intact atlas loads
    base = _fresh(tmp_path_factory)
    folder = base / "atlas"
    shutil.copytree(good_atlas, folder)
    path = folder / name
    path.write_bytes(_corrupt(path.read_bytes(), how, where))
    with pytest.raises(interp.AtlasError) as refusal:
        load_atlas(folder)
    assert "\n" not in str(refusal.value)
    # the CLI reads it the same way and refuses with that very line (before any query of the atlas)
    assert _refused(["atlas", "query", str(folder), "--neuron", "0:1"], capsys) == f"interp: error: {refusal.value}"


@pytest.fixture(scope="module")
def good_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "clamp.safetensors"
    model = interp.load_model("smollm2-135m")
    from interp.recipes import save_recipe

    save_recipe(path, [interp.Clamp("blocks.5.mlp.hook_post", [3], [4.0])], model)
    return path


@SETTINGS
@given(how=st.sampled_from(["truncate", "flip", "append"]), where=st.floats(0, 1))
def test_corrupted_recipes_are_refused_in_one_line(good_recipe, how, where, tmp_path_factory, capsys) -> None:
    from interp.recipes import RecipeError, read_recipe

    argv = ["steer", "--prompt", "The cat", "--max-new-tokens", "2", "--recipe"]
    read_recipe(good_recipe)  # the intact recipe loads
    path = _fresh(tmp_path_factory) / "r.safetensors"
    path.write_bytes(_corrupt(good_recipe.read_bytes(), how, where))
    with pytest.raises(RecipeError) as refusal:
        read_recipe(path)
    assert _refused([*argv, str(path)], capsys) == f"interp: error: {refusal.value}"


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300),
                      st.lists(st.text(max_size=30), max_size=6).map(lambda ls: "\n\n".join(ls).encode()),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                                   lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                                   max_leaves=8).map(lambda v: (json.dumps(v) + "\n").encode())),
       suffix=st.sampled_from([".txt", ".jsonl"]))
def test_any_corpus_file_gives_an_atlas_or_one_line(data, suffix, tmp_path_factory, capsys) -> None:
    base = _fresh(tmp_path_factory)
    corpus = base / f"corpus{suffix}"
    corpus.write_bytes(data)
    out = base / "atlas"
    _ends_well(["analyze", "--corpus", str(corpus), "--layers", "0", "--max-length", "16", "--quiet",
                "--out", str(out)], out, capsys, _atlas_whole)


@settings(SETTINGS, max_examples=8)  # valid maps load a fresh model, offloading to disk
@given(data=st.one_of(st.binary(max_size=200), st.dictionaries(st.text(max_size=20),
                                                              st.sampled_from(["cpu", "disk", "meta", 0, None, "cuda:7", "", "model"]),
                                                              max_size=4).map(lambda d: json.dumps(d).encode())))
def test_any_device_map_file_gives_an_atlas_or_one_line(data, tmp_path_factory, capsys) -> None:
    base = _fresh(tmp_path_factory)
    spec = base / "map.json"
    spec.write_bytes(data)
    out = base / "atlas"
    _ends_well(["analyze", "--corpus", "demo", "--limit", "2", "--layers", "0", "--quiet", "--device-map", str(spec),
                "--offload-folder", str(base / "off"), "--out", str(out)], out, capsys, _atlas_whole)
