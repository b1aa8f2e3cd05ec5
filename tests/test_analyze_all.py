"""`interp analyze --probe all` (issue 29): every analysis that applies, each a step with its own atlas under
OUT/steps, merged into the neuron-card index OUT/index whose cards answer as the step atlases do; a rerun
redoes only the steps that did not finish with the same arguments."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch

from cli.main import main

CARD_STEPS = ("stats", "lm-head", "language-neurons", "hftp", "milan")
# smaller still than --probe all's own small defaults: two layers, a few documents, verses and streams
ARGV = ["analyze", "--model", "smollm2-135m", "--probe", "all", "--layers", "28-29", "--limit", "16",
        "--max-length", "32", "--verses", "24", "--streams", "4", "--groups", "2", "--sentences", "8",
        "--permutations", "20", "--units", "3", "--beam", "4", "--max-tokens", "6", "--quiet"]


def _run(argv: list[str]) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    return code, printed.getvalue()


@pytest.mark.parametrize("extra, message", [
    (["--engine", "vllm"], "transformers engine"),
    (["--launcher", "torchrun"], "runs its steps in this process"),
    (["--sites", "attn.hook_z"], "neuron cards of MLP neurons"),
])
def test_options_that_make_no_sense_with_all_exit_2_in_one_line(tmp_path, capsys, extra, message):
    assert main(["analyze", "--probe", "all", *extra, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_is_not_an_all_folder_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(["analyze", "--probe", "all", "--out", str(tmp_path / "out")]) == 2
    assert "not an `analyze --probe all` folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_captioner):
    """One run of --probe all on smollm2's last two layers: (argv, OUT, what it printed)."""
    out = tmp_path_factory.mktemp("all") / "out"
    argv = [*ARGV, "--describer", str(small_captioner), "--out", str(out)]
    code, printed = _run(argv)
    assert code == 0, printed
    return argv, out, printed


@pytest.mark.slow
def test_all_writes_every_step_and_an_index_whose_cards_equal_the_step_atlases(built):
    from atlases import load_atlas
    from atlases.cards import HFTP_LABELS, CardIndex

    _, out, printed = built
    for step in CARD_STEPS:
        assert f"{step}: done in" in printed
        assert (out / "steps" / step / "atlas.json").is_file()
    for step in ("foxp2", "shared-neurons", "brain-axes"):
        assert f"{step}: skipped (needs" in printed
    cards = CardIndex.load(out / "index")
    assert cards.layers() == [28, 29]  # language-neurons counts every layer; the index keeps --layers
    assert sorted(cards.atlas.params["sources"]) == ["hftp", "lang", "lm", "milan", "stats"]
    stats, lm, lang, hftp, milan = (load_atlas(out / "steps" / s) for s in CARD_STEPS)
    groups = stats.params["groups"]
    langs, tokens = lang.params["langs"], lang.params["tokens_per_language"]
    described = {(int(site.split(".")[1]), int(u)): d["text"]
                 for site, units in milan.params["descriptions"].items() for u, d in units.items()}
    assert len(described) == 6
    g = torch.Generator().manual_seed(29)
    neurons = [(layer, int(torch.randint(1536, (1,), generator=g))) for layer in (28, 29, 28, 29)]
    for layer, n in neurons + sorted(described)[:2]:
        c = cards.card(layer, n)
        post, pre = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.mlp.hook_pre"
        assert c.frequency == pytest.approx(dict(zip(groups, stats.get(post, "frequency")[:, n].tolist())))
        assert c.std == pytest.approx(dict(zip(groups, stats.get(post, "std")[:, n].tolist())))
        assert c.tokens["write"] == [(h.token, pytest.approx(h.prob)) for h in lm.tokens_for(layer, n)]
        n_langs, agnostic = int(lang.get(pre, "n_langs")[n]), bool(lang.get(pre, "agnostic")[n])
        expected = ("agnostic" if agnostic else "specific" if n_langs == 1 else
                    "related" if 2 <= n_langs <= len(langs) - 1 else "")
        assert c.language == expected
        assert c.languages == [lang_ for lang_, m in zip(langs, lang.get(pre, "masks")[:, n]) if m]
        counts = lang.get(pre, "counts")[:, n].tolist()
        assert c.language_rates == pytest.approx({l: k / t for l, k, t in zip(langs, counts, tokens)})
        assert c.hftp == HFTP_LABELS[int(hftp.get(post, "label")[n])]
        assert c.hftp_z["sentence"] == pytest.approx(float(hftp.get(post, "z.sentence")[n]))
        assert c.description == described.get((layer, n))


def _mtimes(out) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "steps").glob("*/atlas.json")}


@pytest.mark.slow
def test_a_rerun_redoes_only_unfinished_or_changed_steps(built):
    argv, out, _ = built
    before = _mtimes(out)
    index = (out / "index" / "atlas.json").stat().st_mtime_ns
    code, printed = _run(argv)  # the same command again: nothing to do
    assert code == 0
    assert all(f"{step}: finished earlier with the same arguments, not redone" in printed for step in CARD_STEPS)
    assert "index: up to date" in printed
    assert _mtimes(out) == before and (out / "index" / "atlas.json").stat().st_mtime_ns == index

    shutil.rmtree(out / "steps" / "lm-head")  # a deleted atlas, and a step killed midway (its state: running)
    state = json.loads((out / "state.json").read_text())
    state["steps"]["stats"]["status"] = "running"
    (out / "state.json").write_text(json.dumps(state))
    code, printed = _run(argv)
    assert code == 0
    redone = {step for step in CARD_STEPS if f"{step}: done in" in printed}
    assert redone == {"stats", "lm-head"}
    after = _mtimes(out)
    assert all(after[s] == before[s] for s in CARD_STEPS if s not in redone) and after["stats"] != before["stats"]
    assert "index: wrote" in printed

    code, printed = _run([*argv, "--directions", "write,up"])  # an lm-head option changed: only lm-head reruns
    assert code == 0
    assert {step for step in CARD_STEPS if f"{step}: done in" in printed} == {"lm-head"}
    from atlases.cards import CardIndex

    assert set(CardIndex.load(out / "index").card(29, 0).tokens) == {"write", "up"}
