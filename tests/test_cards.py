"""Neuron cards (issue 29), the join: atlases in each analyzer's own format (keys as probes/stats.py,
atlases/lm_head_store.py, cli/language.py, cli/hftp.py, cli/milan.py, cli/foxp2.py and cli/shared_neurons.py write them; tests/card_sources.py) merged into one index whose
`card()` returns each source's values for a neuron, refusing another model's atlas, incremental and atomic."""

from __future__ import annotations

import pytest
import torch

from atlases import Atlas, load_atlas
from atlases.cards import CardIndex, merge_atlases
from card_sources import LAYERS, VOCAB, StandIn, all_atlases, brain_atlas, hftp_atlas, lm_atlas
from interp.errors import AtlasError


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlases")
    atlases = all_atlases()
    return {name: a.save(root / name) for name, a in atlases.items()}, atlases


def test_a_card_carries_each_sources_values_for_its_neuron(sources, tmp_path):
    folders, atlases = sources
    merge_atlases(tmp_path / "index", list(folders.values()))
    cards = CardIndex.load(tmp_path / "index")
    for layer, n in [(3, 0), (3, 4), (7, 5), (7, 11)]:
        c = cards.card(layer, n)
        s, post, pre = atlases["stats"], f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.mlp.hook_pre"
        assert c.frequency == pytest.approx(dict(zip(["en", "fr"], s.get(post, "frequency")[:, n].tolist())))
        assert c.std == pytest.approx(dict(zip(["en", "fr"], s.get(post, "std")[:, n].tolist())))
        docs = s.get(post, "topk_doc")[n]
        assert [e["doc"] for e in c.exemplars] == [int(d) for d in docs if d >= 0]
        assert all(e["text"] == f"document {e['doc']}" for e in c.exemplars)
        ids = atlases["lm"].get(post, "write.top_ids")[n]
        assert [t for t, _ in c.tokens["write"]] == [VOCAB[i] for i in ids]
        assert set(c.tokens) == {"write", "up"}
        n_langs = int(atlases["lang"].get(pre, "n_langs")[n])
        assert c.language == {1: "specific", 2: "related", 3: "related", 4: "agnostic"}.get(n_langs, "")
        assert c.languages == [lang for lang, m in zip(["en", "es", "fr", "zh"], atlases["lang"].get(pre, "masks")[:, n]) if m]
        assert c.language_rates["es"] == pytest.approx(float(atlases["lang"].get(pre, "counts")[1, n]) / 50)
        assert c.hftp == ("", "sentence-only", "phrase-only", "shared")[int(atlases["hftp"].get(post, "label")[n])]
        assert c.hftp_z["phrase"] == pytest.approx(float(atlases["hftp"].get(post, "z.phrase")[n]))
        assert (c.description, c.pmi) == (("names of cities", 1.5) if (layer, n) == (7, 5) else (None, None))
        spectrum = atlases["hftp"].get(post, "spectrum.experiment")[:, n].float() \
            - atlases["hftp"].get(post, "spectrum.control")[:, n].float()
        assert c.hftp_spectrum == pytest.approx(spectrum.tolist(), abs=2e-3)
        if layer == 7:
            assert c.foxp2 == {1: "target", 4: "both", 9: "english"}.get(n, "")
            assert c.foxp2_mean_diff == pytest.approx(float(atlases["foxp2"].get(post, "mean_diff")[n]))
        else:
            assert c.foxp2 is None and c.foxp2_mean_diff is None  # outside the localisation window: no field
        assert c.shared == {name: bool(atlases["shared"].tensors[f"blocks.{layer}.up/{name}"][n])
                            for name in ("llm", "vlm", "shared")}


def test_absent_analyses_leave_fields_empty_and_merging_one_more_touches_only_its_fields(sources, tmp_path):
    folders, atlases = sources
    index = tmp_path / "index"
    merge_atlases(index, [folders["lm"]])
    bare = CardIndex.load(index).card(3, 4)
    assert bare.tokens and not bare.frequency and bare.language is None and bare.hftp is None and not bare.exemplars
    before = load_atlas(index).tensors
    merge_atlases(index, [folders["hftp"]])
    after = load_atlas(index).tensors
    assert all(torch.equal(after[k], v) for k, v in before.items())  # lm-head fields untouched
    assert sorted(set(after) - set(before)) == sorted(f"blocks.{layer}.mlp.hook_post/hftp.{n}" for layer in LAYERS
                                                      for n in ("label", "z.sentence", "z.phrase", "spectrum"))
    merge_atlases(index, [folders["hftp"]])  # again: the same index
    assert all(torch.equal(load_atlas(index).tensors[k], v) for k, v in after.items())


def test_an_atlas_of_another_model_or_shape_is_refused_in_one_line(sources, tmp_path):
    folders, _ = sources
    g = torch.Generator().manual_seed(1)
    other = lm_atlas(g, model="other").save(tmp_path / "other")
    with pytest.raises(AtlasError, match="made for model 'other'; this index is of 'm'") as err:
        merge_atlases(tmp_path / "index", [folders["stats"], other])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "index").exists()  # nothing half-written
    narrow = hftp_atlas(g)
    narrow.tensors = {k: v[..., :8] for k, v in narrow.tensors.items()}
    with pytest.raises(AtlasError, match="8 neurons at layer 3; this index has 12"):
        merge_atlases(tmp_path / "index", [folders["stats"], narrow.save(tmp_path / "narrow")])
    with pytest.raises(AtlasError, match="no per-neuron fields"):
        merge_atlases(tmp_path / "index", [Atlas("m", ["blocks.3.mlp.hook_post"], "sae-features",
                                                 {"blocks.3.mlp.hook_post/x": torch.zeros(2)}, {})
                                           .save(tmp_path / "sae")])
    with pytest.raises(AtlasError, match="has no adapters"):
        merge_atlases(tmp_path / "index", [Atlas("meg", ["meg"], "brain-axes", {"meg/scores": torch.zeros(2)}, {})
                                           .save(tmp_path / "brain")])
    brain = brain_atlas(g).save(tmp_path / "brain-adapters")
    with pytest.raises(AtlasError, match="needs the model"):
        merge_atlases(tmp_path / "index", [brain])
    with pytest.raises(AtlasError, match="fitted on 'm', not 'other'"):
        merge_atlases(tmp_path / "index", [brain], model=StandIn("other"))
    assert not (tmp_path / "index").exists()


def test_brain_axis_loadings_are_each_neurons_write_direction_through_the_adapter(sources, tmp_path):
    folders, _ = sources
    g = torch.Generator().manual_seed(4)
    brain, model = brain_atlas(g), StandIn()
    merge_atlases(tmp_path / "index", [folders["lm"], brain.save(tmp_path / "brain")], model=model)
    cards = CardIndex.load(tmp_path / "index")
    coef = brain.tensors["blocks.7.hook_resid_post/adapter.coef"]
    scale = brain.tensors["blocks.7.hook_resid_post/adapter.scale"]
    for n in (0, 6, 11):
        # the adapter's score moves by coef · ((h + a·w) − mean) / scale − coef · (h − mean) / scale = a · coef · w / scale
        h, w = torch.randn(6, generator=g), model.write_weights(7)[:, n]
        moved = (coef @ ((h + w) / scale)) - (coef @ (h / scale))
        assert list(cards.card(7, n).brain) == [2, 5]
        assert list(cards.card(7, n).brain.values()) == pytest.approx(moved.tolist(), rel=1e-4, abs=1e-5)
        assert cards.card(3, n).brain == {}  # no adapter at layer 3


def test_interp_atlas_merge_builds_the_index_and_refuses_another_model_in_one_line(sources, tmp_path):
    import subprocess
    import sys

    folders, _ = sources
    run = lambda *a: subprocess.run([sys.executable, "-m", "cli.main", "atlas", "merge", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    ok = run(tmp_path / "index", folders["stats"], folders["milan"])
    assert ok.returncode == 0 and "from milan, stats" in ok.stdout, ok.stderr
    assert CardIndex.load(tmp_path / "index").card(7, 5).description == "names of cities"
    other = lm_atlas(torch.Generator().manual_seed(2), model="other").save(tmp_path / "other")
    bad = run(tmp_path / "index", other)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "made for model 'other'" in bad.stderr


def test_search_finds_what_each_source_says(sources, tmp_path):
    folders, atlases = sources
    lm = atlases["lm"]
    lm.tensors["blocks.7.mlp.hook_post/write.top_ids"][9, 0] = 42  # plant: neuron 7:9 writes "tok42" most
    lm.tensors["blocks.7.mlp.hook_post/write.top_probs"][9, 0] = 5.0
    planted = lm.save(tmp_path / "lm")
    merge_atlases(tmp_path / "index", [folders["stats"], planted, folders["lang"], folders["hftp"], folders["milan"]])
    cards = CardIndex.load(tmp_path / "index")
    best = cards.search(token="tok42")
    assert (best[0].layer, best[0].neuron) == (7, 9)
    assert all(any(t == "tok42" for t, _ in c.tokens["write"]) for c in best)
    assert [(c.layer, c.neuron) for c in cards.search(text="which cities?")][:1] == [(7, 5)]
    spanish = cards.search(language="Spanish", k=100)
    assert [(c.layer, c.neuron) for c in spanish] == [(c.layer, c.neuron) for c in cards.search(language="es", k=100)]
    assert spanish and all("es" in c.languages for c in spanish)
    kinds = [c.language == "specific" for c in spanish]
    assert kinds == sorted(kinds, reverse=True)  # specific ones first
    expected = sum(int(atlases["lang"].get(f"blocks.{layer}.mlp.hook_pre", "masks")[1].sum()) for layer in LAYERS)
    assert len(spanish) == expected
    shared = cards.search(label="shared", layer=3, k=100)
    assert shared and all(c.hftp == "shared" and c.layer == 3 for c in shared)
    with pytest.raises(AtlasError, match="not among this index's"):
        cards.search(language="Klingon")


@pytest.mark.slow
def test_real_atlases_of_smollm2_join_into_cards_that_answer_as_the_sources_do(tmp_path, smollm2):
    """lm-head and stats atlases of smollm2's last two layers, made by `interp analyze`, merged: a card's write
    tokens are `Atlas.tokens_for`'s, its rates the stats atlas's, its top exemplar's highlighted token the one the
    activation was read at, and token search ranks as `Atlas.neurons_for` does."""
    from cli.main import main

    lm, stats = tmp_path / "lm", tmp_path / "stats"
    assert main(["analyze", "--probe", "lm-head", "--layers", "28-29", "--directions", "write", "--quiet",
                 "--out", str(lm)]) == 0
    assert main(["analyze", "--corpus", "bible:en,fr:8", "--sites", "mlp.hook_post", "--layers", "28-29",
                 "--max-length", "32", "--top-k", "3", "--quiet", "--out", str(stats)]) == 0
    merge_atlases(tmp_path / "index", [lm, stats])
    cards, lm_atlas, stats_atlas = CardIndex.load(tmp_path / "index"), load_atlas(lm), load_atlas(stats)
    g = torch.Generator().manual_seed(3)
    for layer, n in [(28, int(torch.randint(1536, (1,), generator=g))), (29, int(torch.randint(1536, (1,), generator=g)))]:
        c = cards.card(layer, n, tokenizer=smollm2.tokenizer)
        assert c.tokens["write"] == [(h.token, pytest.approx(h.prob)) for h in lm_atlas.tokens_for(layer, n)]
        freq = stats_atlas.get(f"blocks.{layer}.mlp.hook_post", "frequency")[:, n]
        assert list(c.frequency.values()) == pytest.approx(freq.tolist())
        top = c.exemplars[0]
        ids = smollm2.tokenizer(top["text"], truncation=True, max_length=32)["input_ids"]
        assert top["context"][1] == smollm2.tokenizer.decode(ids[top["pos"]: top["pos"] + 1])
    hits = lm_atlas.neurons_for(" the", k=5)
    assert hits
    found = cards.search(token=" the", k=5)
    assert [(c.layer, c.neuron) for c in found] == [(h.layer, h.neuron) for h in hits]


@pytest.mark.slow
def test_a_merge_killed_midway_and_rerun_gives_the_same_index(sources, tmp_path):
    """SIGKILL at several moments of `interp atlas merge` (~4 s here, mostly start-up; the write itself is
    `Atlas.save`'s atomic rename): the index folder is never half-written, and running the merge again gives the
    index an uninterrupted merge gives."""
    import signal
    import subprocess
    import sys
    import time

    folders, _ = sources
    argv = [sys.executable, "-m", "cli.main", "atlas", "merge"]
    merge_atlases(tmp_path / "reference", list(folders.values()))
    reference = load_atlas(tmp_path / "reference")
    for i, delay in enumerate((0.8, 1.8, 2.8)):
        out = tmp_path / f"index{i}"
        proc = subprocess.Popen([*argv, str(out), *map(str, folders.values())], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            load_atlas(out)  # whole, or not there at all
        assert subprocess.run([*argv, str(out), *map(str, folders.values())], capture_output=True).returncode == 0
        again = load_atlas(out)
        assert again.params == reference.params
        assert again.tensors.keys() == reference.tensors.keys()
        assert all(torch.equal(again.tensors[k], v) for k, v in reference.tensors.items())
