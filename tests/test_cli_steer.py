"""`interp steer`: each edit option generates what the Python API generates; bad input exits 2 with one line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import interp
from cli_checks import run_cli
from cli.main import main
from steering import actadd

PROMPTS = ["The movie was", "My neighbour is"]
TOKENS = 8
CLAMP = ("blocks.5.mlp.hook_post", 123, 20.0)  # strong enough to change 8 greedy tokens of both prompts


def _norm(text: str) -> str:
    return " ".join(text.split())


def _parse(out: str) -> dict[str, tuple[str, ...]]:
    """{prompt: (continuation,)} or, with --compare, {prompt: (unsteered, steered)}, whitespace-normalised."""
    blocks = re.split(r"^\[\d+\] ", out, flags=re.M)[1:]
    parsed = {}
    for block in blocks:
        prompt, *lines = block.rstrip("\n").split("\n")
        if lines and lines[0].lstrip().startswith("unsteered"):
            col = lines[1].index(" | ")
            left = [l[2:col] for l in lines[2:]]
            right = [l[col + 3:] for l in lines[2:]]
            parsed[prompt] = (_norm(" ".join(left)), _norm(" ".join(right)))
        else:
            parsed[prompt] = (_norm(" ".join(lines)),)
    return parsed


def _run(argv, capsys):
    code = main(["steer", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return _parse(out), out


def _prompt_args():
    return [a for p in PROMPTS for a in ("--prompt", p)] + ["--max-new-tokens", str(TOKENS)]


def _expected(model, edits):
    return [_norm(t) for t in interp.generate(model, PROMPTS, edits, max_new_tokens=TOKENS)]


def test_clamp_compare_shows_unsteered_and_steered(smollm2, capsys):
    site, neuron, value = CLAMP
    parsed, out = _run(["--clamp", f"{site}:{neuron}={value}", "--compare", *_prompt_args()], capsys)
    plain = _expected(smollm2, [])
    steered = _expected(smollm2, [interp.Clamp(site, [neuron], value)])
    assert f"clamp {site}[{neuron}] = 20" in out
    assert list(parsed) == PROMPTS
    for i, p in enumerate(PROMPTS):
        assert parsed[p] == (plain[i], steered[i])
        assert plain[i] != steered[i]  # the clamp changed the continuation


def test_add_vector_from_safetensors(smollm2, capsys, tmp_path):
    site = "blocks.8.hook_resid_post"
    vec = torch.randn(smollm2.adapter.d_model, generator=torch.Generator().manual_seed(0))
    save_file({"vector": vec}, str(tmp_path / "vec.safetensors"))
    save_file({"steer": vec.unsqueeze(0)}, str(tmp_path / "single.safetensors"))  # one tensor, any name, [1, w]
    want = _expected(smollm2, [interp.Add(site, vec, 4.0)])
    assert want != _expected(smollm2, [])
    for name in ("vec.safetensors", "single.safetensors"):
        parsed, out = _run(["--add", f"{site}:{tmp_path / name}*4", *_prompt_args()], capsys)
        assert [parsed[p][0] for p in PROMPTS] == want
        assert f"add 4 x {name}" in out
    # --positions reaches the edit: acting only on generated tokens differs from acting on all of them
    parsed, _ = _run(["--add", f"{site}:{tmp_path / 'vec.safetensors'}*4", "--positions", "generated",
                      *_prompt_args()], capsys)
    assert [parsed[p][0] for p in PROMPTS] == _expected(smollm2, [interp.Add(site, vec, 4.0, "generated")])


def test_contrast_files_use_actadd(smollm2, capsys, tmp_path):
    pos = ["I love this, it is wonderful.", "What a beautiful day, I feel so happy.", "This is great."]
    neg = ["I hate this, it is terrible.", "What an awful day, I feel so sad.", "This is bad."]
    (tmp_path / "pos.txt").write_text("\n".join(pos[:2]) + "\n\n   \n" + pos[2] + "\n")  # blank lines are skipped
    (tmp_path / "neg.txt").write_text("\n".join(neg) + "\n")
    site = "blocks.10.hook_resid_pre"
    parsed, out = _run(["--contrast", str(tmp_path / "pos.txt"), str(tmp_path / "neg.txt"), "--site", site,
                        "--scale", "6", "--compare", *_prompt_args()], capsys)
    steered = _expected(smollm2, actadd(smollm2, pos, neg, site, 6.0))
    assert [parsed[p][1] for p in PROMPTS] == steered
    assert [parsed[p][0] for p in PROMPTS] == _expected(smollm2, [])
    assert "mean of 3 positive - mean of 3 negative" in out


def test_recipe(smollm2, capsys, tmp_path):
    from interp import recipes

    site, neuron, value = CLAMP
    edits = [interp.Clamp(site, [neuron], value), interp.Add("blocks.3.hook_resid_pre", torch.ones(576), 0.5)]
    path = recipes.save_recipe(tmp_path / "r.safetensors", edits, smollm2)
    parsed, out = _run(["--recipe", str(path), *_prompt_args()], capsys)
    assert [parsed[p][0] for p in PROMPTS] == _expected(smollm2, edits)
    assert "recipe r.safetensors: 2 edit(s)" in out


def test_dopamine_trains_a_recipe_that_steer_applies(smollm2, capsys, tmp_path):
    from interp.recipes import load_recipe, read_recipe

    mode = tmp_path / "mode.jsonl"
    mode.write_text('{"prompt": "The weather today is", "completion": " muy bonito."}\n'
                    '{"prompt": "I like", "completion": " la comida de mi madre."}\n')
    recipe = tmp_path / "gates.safetensors"
    code = main(["steer", "dopamine", "--train", str(mode), "--out", str(recipe), "--gate-layers", "3,4",
                 "--gate-steps", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "recipe written to" in out and recipe.is_file()
    header, edits = read_recipe(recipe)
    assert header["provenance"]["writer"] == "dopamine" and header["provenance"]["examples"] == 2
    assert [e.site for e in edits] == ["blocks.3.mlp.hook_post", "blocks.4.mlp.hook_post"]
    assert all(e.kind == "gate" and e.hard for e in edits)
    parsed, out = _run(["--recipe", str(recipe), *_prompt_args()], capsys)
    assert [parsed[p][0] for p in PROMPTS] == _expected(smollm2, load_recipe(recipe, smollm2))


def test_steer_help():
    proc = subprocess.run([sys.executable, "-m", "cli.main", "steer", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: interp steer" in proc.stdout
    for opt in ("--clamp", "--add", "--contrast", "--recipe", "--compare", "--positions", "--max-new-tokens"):
        assert opt in proc.stdout


SHARED = ("--prompt", "--model", "--compare", "--max-new-tokens", "--repetition-penalty", "--engine", "--save-recipe")
OWN = {"foxp2": ("--target", "--window", "--strength", "--beta"),
       "brain-axis": ("--atlas", "--axis", "--layer", "--strength", "--norm-fraction"),
       "snrf": ("--donor", "--rank", "--save-merged", "--beta"),
       "dopamine": ("--train", "--out", "--gate-layers", "--gate-steps")}
GENERIC = ("--clamp", "--add", "--contrast", "--recipe", "--concept")


@pytest.mark.parametrize("method", sorted(OWN))
def test_each_method_help_shows_its_own_options_and_the_shared_ones(method, capsys):
    assert main(["steer", method, "--help"]) == 0
    out = capsys.readouterr().out
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out))
    foreign = {o for m, opts in OWN.items() if m != method for o in opts} - set(OWN[method])
    assert f"usage: interp steer {method}" in out
    assert set(OWN[method]) | set(SHARED) <= options, out
    assert not (foreign | set(GENERIC)) & options, out


@pytest.mark.parametrize("method", sorted(OWN))
def test_the_old_method_option_names_the_subcommand(method, capsys):
    assert main(["steer", "--prompt", "x", "--method", method]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"interp steer {method}" in err, err


def test_options_before_the_method_name_stand_and_generic_edits_after_it_are_refused(capsys):
    from cli.main import build_parser

    args = build_parser().parse_args(["steer", "--prompt", "p", "--recipe", "r.safetensors", "--max-new-tokens", "5",
                                      "foxp2", "--target", "es", "--compare"])
    assert (args.method, args.prompt, args.recipe, args.max_new_tokens, args.target, args.compare) == \
        ("foxp2", ["p"], "r.safetensors", 5, "es", True)
    assert main(["steer", "foxp2", "--target", "es", "--prompt", "p", "--clamp", "blocks.1.mlp.hook_post:1=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--clamp goes before the method's name" in err, err


BAD = [
    (["--clamp", "blocks.5.mlp.hook_post=4"], "SITE:NEURON=VALUE"),
    (["--clamp", "blocks.5.mlp.hook_post:abc=4"], "not a whole number"),
    (["--clamp", "blocks.5.mlp.hook_post:3=big"], "not a number"),
    (["--clamp", "blocks.5.mlp.hook_nope:3=1"], "unknown site"),
    (["--clamp", "blocks.31.mlp.hook_post:3=1"], "out of range"),
    (["--clamp", "blocks.5.mlp.hook_post:1536=1"], "neuron out of range"),
    (["--add", "blocks.8.hook_resid_post:{missing}*4"], "does not exist"),
    (["--add", "blocks.8.hook_resid_post:{garbage}*4"], "not a readable safetensors"),
    (["--add", "blocks.8.hook_resid_post:{two}*4"], "single tensor"),
    (["--add", "blocks.8.hook_resid_post:{wide}*4"], "width 576"),
    (["--add", "blocks.8.hook_resid_post:{vec}*x"], "not a number"),
    (["--contrast", "{empty}", "{vec}", "--site", "blocks.8.hook_resid_post", "--scale", "4"], "empty"),
    (["--contrast", "{pos}", "{missing}", "--site", "blocks.8.hook_resid_post", "--scale", "4"], "does not exist"),
    (["--contrast", "{pos}", "{pos}", "--scale", "4"], "needs --site"),
    (["--site", "blocks.8.hook_resid_post", "--scale", "4"], "go with --contrast"),
    (["--recipe", "{missing}"], "does not exist"),
    (["--recipe", "{garbage}"], "not a safetensors recipe"),
    ([], "no edits given"),
    (["dopamine", "--out", "{vec}"], "needs --train"),
    (["--train", "{pos}"], "--train goes with interp steer dopamine"),
    (["dopamine", "--train", "{empty}", "--out", "x.safetensors"], "no examples"),
    (["dopamine", "--train", "{pos}", "--out", "x.safetensors"], "not a JSON object"),
    (["dopamine", "--train", "switch:xx", "--out", "x.safetensors"], "parallel Bible"),
    (["--clamp", "blocks.5.mlp.hook_post:3=1", "--positions", "later"], "invalid choice"),
]


# these run as real subprocesses (exit status, stderr, no traceback); the rest in-process through main()
SUBPROCESS = {"not a readable safetensors", "invalid choice"}


def _files(tmp_path) -> dict[str, str]:
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01 not a safetensors file at all")
    save_file({"a": torch.zeros(576), "b": torch.zeros(576)}, str(tmp_path / "two.safetensors"))
    save_file({"vector": torch.zeros(577)}, str(tmp_path / "wide.safetensors"))
    save_file({"vector": torch.zeros(576)}, str(tmp_path / "vec.safetensors"))
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "pos.txt").write_text("I love it.\n")
    names = {"missing": "missing.safetensors", "garbage": "garbage.safetensors", "two": "two.safetensors",
             "wide": "wide.safetensors", "vec": "vec.safetensors", "empty": "empty.txt", "pos": "pos.txt"}
    return {k: str(tmp_path / v) for k, v in names.items()}


@pytest.mark.parametrize("argv,needle", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys):
    files = _files(tmp_path)
    argv = ["steer", "--prompt", "Hi", "--max-new-tokens", "2",
            *[re.sub(r"\{(\w+)\}", lambda m: files[m[1]], a) for a in argv]]
    code, out, err = run_cli(argv, capsys, real=needle in SUBPROCESS)
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert needle.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    assert out == ""


def test_subprocess_cases_exist():
    assert SUBPROCESS <= {needle for _, needle in BAD}
