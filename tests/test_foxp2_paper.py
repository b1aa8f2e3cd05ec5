"""Neural FOXP2's issue-30 knobs and paper mode: the residual-stream site (the paper's h_l), the low-to-mid window
rule, the top-k English directions of the compensating shift, the largest-|W_dec| tracing; `Foxp2Settings.paper()`
and `--paper` on `interp analyze --probe foxp2` / `interp steer foxp2` (provenance in the atlas and the recipe).

The full-size comparison of the two sites (share and perplexity ratio to the matched reference) is
`benchmarks/foxp2.py --targets es --sites neurons resid` (RESULTS.md)."""

from __future__ import annotations

import pytest
import torch

from probes.foxp2 import (Foxp2Settings, english_directions, trace_units, unit_scores, window_by_rule)
from probes.language_directions import spectrum
from steering.foxp2 import Foxp2Layer, foxp2_edits, window_from_neuron_sets

PAPER_CHOICES = {"site": "hook_resid_post", "window_rule": "low-to-mid", "tracing": "decoder",
                 "english_directions": "top-k"}


def test_paper_settings_switch_the_four_marked_choices_and_nothing_else() -> None:
    ours, paper = Foxp2Settings(target="fr"), Foxp2Settings(target="fr").as_paper()
    assert {c.setting for c in Foxp2Settings.paper_choices()} == set(PAPER_CHOICES)
    assert ours.provenance() == {"paper": False, "choices": {"site": "mlp.hook_post", "window_rule": "best-run",
                                                             "tracing": "contribution", "english_directions": "mean"}}
    assert paper.provenance() == {"paper": True, "choices": PAPER_CHOICES}
    assert paper.target == "fr" and paper.sae_steps == ours.sae_steps
    assert Foxp2Settings.paper().is_paper() and not ours.is_paper()
    assert all(c.why for c in Foxp2Settings.paper_choices())
    with pytest.raises(Exception, match="site"):
        Foxp2Settings(site="blocks.3.hook_resid_post")


def test_the_low_to_mid_rule_picks_another_window_than_the_best_run_on_a_planted_profile() -> None:
    # 30 layers: a sharp peak at layer 8, a broad high plateau at 16–26 (like smollm2's late layers)
    energy = [0.5] * 30
    energy[7], energy[8], energy[9] = 0.8, 0.95, 0.8
    for l in range(16, 27):
        energy[l] = 0.9
    stability = [1.0] * 30
    ours = window_by_rule(energy, stability, Foxp2Settings())
    paper = window_by_rule(energy, stability, Foxp2Settings(window_rule="low-to-mid"))
    assert len(ours) == 8 and ours[0] >= 16  # a quarter of the layers, on the plateau
    assert paper == [7, 8, 9]  # in the first two thirds, around the best, within 0.8 of it


def test_decoder_tracing_picks_large_weights_that_the_contribution_tracing_skips() -> None:
    # MLP neurons: neuron 0 writes the feature strongly but never fires; neuron 1 writes it moderately and fires
    d = torch.tensor([[1.0, 0.0, 0.0]])  # one feature's decoder direction, d_model 3
    write = torch.tensor([[5.0, 1.0, 0.1, -4.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # [d_model, d_mlp]
    mean_act = torch.tensor([0.0, 2.0, 1.0, 0.5])
    contrib = trace_units(unit_scores(d, tracing="contribution", write=write, mean_activation=mean_act), 2)
    decoder = trace_units(unit_scores(d, tracing="decoder", write=write, mean_activation=mean_act), 2)
    assert contrib == [1, 2] and decoder == [0, 3]
    # residual dimensions: |W_dec| also takes the large negative entries
    w_dec = torch.tensor([[0.1, -0.9, 0.5, 0.3], [0.2, 0.0, -0.8, 0.6]])
    assert trace_units(unit_scores(w_dec, tracing="contribution", feature_activation=torch.ones(2)), 1) == [2, 3]
    assert trace_units(unit_scores(w_dec, tracing="decoder"), 1) == [1, 2]


def test_top_k_english_directions_point_to_english_and_span_more_than_the_mean() -> None:
    g = torch.Generator().manual_seed(0)
    D = torch.randn(24, 16, generator=g) + torch.linspace(-2, 2, 16)  # target − English, a shared shift
    sp = spectrum(D)
    mean = english_directions(D, sp, Foxp2Settings())
    topk = english_directions(D, sp, Foxp2Settings(english_directions="top-k"))
    three = english_directions(D, sp, Foxp2Settings(english_directions="top-k", english_k=3))
    assert torch.equal(mean, -sp.mean_diff[None]) and topk.shape == (max(2, sp.rank), 16) and three.shape[0] == 3
    torch.testing.assert_close(three @ three.T, torch.eye(3), atol=1e-5, rtol=0)
    assert bool(((topk @ sp.mean_diff) <= 0).all())  # each towards English


def test_resid_layers_write_their_edits_at_the_residual_stream() -> None:
    g = torch.Generator().manual_seed(0)
    sp = spectrum(torch.randn(12, 8, generator=g) + 2.0)
    e = -torch.eye(8)[:2]
    window = window_from_neuron_sets({4: sp}, {4: [1, 2]}, {4: [5]}, site="hook_resid_post", english={4: e})
    edits = foxp2_edits(window, alpha=2.0)
    assert [x.site for x in edits] == ["blocks.4.hook_resid_post"] * 2
    assert torch.equal(window[0].english_directions, e)
    assert foxp2_edits([Foxp2Layer(3, sp.directions, sp.mean_diff, [1], [2], -sp.mean_diff[None])])[0].site == \
        "blocks.3.mlp.hook_post"  # the default stays the neurons


# ---------------------------------------------------------------- slow: smollm2
@pytest.mark.slow
def test_resid_site_edits_change_smollm2s_continuations(smollm2) -> None:
    """Real residual-stream differences at two layers; the edits act at `blocks.L.hook_resid_post` (d_model wide)
    and change the greedy continuation."""
    import interp
    from probes.language_counts import bible_texts
    from probes.language_directions import difference_matrices

    texts = bible_texts(["en", "es"], limit=12)
    D = difference_matrices(smollm2, texts["es"], texts["en"], site="hook_resid_post", layers=[12, 13])
    spectra = {l: spectrum(d) for l, d in D.items()}
    units = {l: sp.mean_diff.abs().topk(64).indices.tolist() for l, sp in spectra.items()}
    window = window_from_neuron_sets(spectra, units, {}, site="hook_resid_post")
    edits = foxp2_edits(window, alpha=3.0)
    assert {x.site for x in edits} == {"blocks.12.hook_resid_post", "blocks.13.hook_resid_post"}
    assert edits[0].vector.shape == (smollm2.adapter.d_model,)
    prompts = ["The best way to learn is", "My favourite food is"]
    plain = interp.generate(smollm2, prompts, max_new_tokens=10)
    steered = interp.generate(smollm2, prompts, edits, max_new_tokens=10)
    print(f"\nunsteered {plain}\nresid FOXP2 {steered}")
    assert steered != plain


@pytest.mark.slow
def test_the_paper_window_rule_differs_from_ours_on_smollm2(smollm2) -> None:
    """smollm2 → es on 24 verses: one set of spectra, the two window rules give different windows."""
    from probes.foxp2 import spectra_and_window
    from probes.language_counts import bible_texts

    texts = bible_texts(["en", "es"], limit=24)
    settings = Foxp2Settings(bootstrap=5)
    spectra, stability, ours = spectra_and_window(smollm2, texts["es"], texts["en"], settings)
    layers = sorted(spectra)
    paper = window_by_rule([spectra[l].energy for l in layers], [stability[l] for l in layers],
                           Foxp2Settings(bootstrap=5, window_rule="low-to-mid"))
    print(f"\nbest-run {ours}, low-to-mid {paper}")
    assert len(ours) == 8 and ours != paper and max(paper) < 20


SMALL = ["--target", "es", "--foxp2-verses", "16", "--sae-steps", "20", "--strength", "1.5", "--window", "20-21"]


@pytest.mark.slow
def test_foxp2_paper_run_records_the_papers_choices_and_differs_from_the_default(smollm2, tmp_path) -> None:
    """`interp analyze --probe foxp2 --paper` at a tiny size (a fixed window of two layers, so the window rule is
    the one choice that does not act here): the atlas and its recipe record the paper's choices; the steering
    site, the directions and the traced units differ from the default run. `interp steer foxp2 --paper` records
    them in its recipe too."""
    from atlases import load_atlas
    from cli.main import main
    from interp.recipes import read_recipe

    assert main(["analyze", "--probe", "foxp2", *SMALL, "--out", str(tmp_path / "ours")]) == 0
    assert main(["analyze", "--probe", "foxp2", *SMALL, "--paper", "--out", str(tmp_path / "paper")]) == 0
    ours, paper = load_atlas(tmp_path / "ours"), load_atlas(tmp_path / "paper")
    assert paper.params["paper_mode"] == {"paper": True, "choices": PAPER_CHOICES}
    assert ours.params["paper_mode"]["paper"] is False
    assert paper.sites == ["blocks.20.hook_resid_post", "blocks.21.hook_resid_post"]
    assert ours.sites == ["blocks.20.mlp.hook_post", "blocks.21.mlp.hook_post"]
    assert paper.tensors["blocks.20.hook_resid_post/english_directions"].shape[0] >= 2
    assert ours.tensors["blocks.20.mlp.hook_post/english_directions"].shape[0] == 1
    assert ours.params["layers"]["20"]["target_neurons"] != paper.params["layers"]["20"]["target_neurons"]
    prov = read_recipe(tmp_path / "paper" / "recipe.safetensors")[0]["provenance"]
    assert prov["paper_mode"] == {"paper": True, "choices": PAPER_CHOICES} and prov["site"] == "hook_resid_post"
    header, edits = read_recipe(tmp_path / "ours" / "recipe.safetensors")
    assert header["provenance"]["paper_mode"]["paper"] is False and edits[0].site == "blocks.20.mlp.hook_post"

    saved = tmp_path / "steer.safetensors"
    assert main(["steer", "foxp2", "--paper", *SMALL, "--max-new-tokens", "8", "--prompt", "My favourite food is",
                 "--save-recipe", str(saved)]) == 0
    prov = read_recipe(saved)[0]["provenance"]
    assert prov["paper_mode"] == {"paper": True, "choices": PAPER_CHOICES}
