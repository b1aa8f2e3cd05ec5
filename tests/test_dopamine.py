"""Dopamine gates (issue 11, first part): the gate's two forms, its export as an engine edit, and the
paper's digits experiment at test size."""

from __future__ import annotations

import pytest
import torch

import interp
from steering.dopamine import GateSettings, UnitGates, attributions


def _gates(width: int = 6, seed: int = 0) -> UnitGates:
    g = UnitGates(width, GateSettings(temperature=0.5))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g.threshold.copy_(torch.randn(width, generator=gen))
        g.gain.copy_(1 + torch.rand(width, generator=gen))
    return g


def test_smooth_gate_is_the_formula_and_tends_to_the_hard_gate() -> None:
    g = _gates()
    a = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(1)) * 2
    expected = g.gain * torch.sigmoid((a - g.threshold) / 0.5) * a
    torch.testing.assert_close(g(a), expected)
    g.hard = True
    hard = g(a)
    torch.testing.assert_close(hard, g.gain * (a > g.threshold).float() * a)
    g.hard, g.temperature = False, 1e-4  # T → 0: the smooth gate becomes the hard one
    torch.testing.assert_close(g(a), hard, atol=1e-3, rtol=0)


def test_hard_gate_exports_as_the_engines_gate_edit() -> None:
    g = _gates()
    g.hard = True
    a = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2))
    edit = g.to_edit("blocks.0.mlp.hook_post")
    assert isinstance(edit, interp.Gate) and edit.hard
    torch.testing.assert_close(interp.apply_reference([edit], a), g(a))


def test_annealing_runs_geometrically_from_t0_to_t1() -> None:
    s = GateSettings(temperature=1.0, final_temperature=0.01, steps=3)
    assert [round(s.temperature_at(i), 6) for i in range(3)] == [1.0, 0.1, 0.01]


def test_early_stopping_keeps_the_best_validated_gates() -> None:
    from steering.dopamine import train_gates

    gates = UnitGates(4)
    head = torch.nn.Linear(4, 3)
    head.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 4, generator=gen), torch.randint(3, (64,), generator=gen)
    scores, seen = iter([0.1, 0.9, 0.5, 0.2]), []

    def validate():
        assert gates.hard  # scored as it will be used
        seen.append({k: v.clone() for k, v in gates.state_dict().items()})
        return next(scores)

    train_gates(lambda v: head(gates(v)), [gates], x, y, GateSettings(steps=8, batch_size=16), validate=validate,
                every=2)
    assert len(seen) == 4
    assert all(torch.equal(gates.state_dict()[k], seen[1][k]) for k in seen[1])
    assert not torch.equal(seen[1]["gain"], seen[3]["gain"])  # training went on after the best checkpoint


def test_attributions_split_units_by_what_the_gate_does() -> None:
    g = UnitGates(3)
    with torch.no_grad():
        g.threshold.copy_(torch.tensor([5.0, 0.0, -1.0]))
    base = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0]])  # units 0, 1 fire; unit 2 never does
    assert attributions(g, base) == {"turned_off": [0], "kept_on": [1]}
    signed = torch.tensor([[-2.0, 0.5, -0.5], [-3.0, 2.0, -0.5]])  # signed (SwiGLU) units fire when nonzero
    assert attributions(g, signed) == {"turned_off": [0], "kept_on": [1, 2]}
    from steering.dopamine import attribution_png

    assert attribution_png({"layer 1": (g, base), "layer 2": (g, signed)}).startswith(b"\x89PNG")


@pytest.mark.slow
def test_digits_experiment_at_test_size() -> None:
    """Gates on a frozen MLP: a few hundred parameters per layer, hardened gates within 2 points of the
    smooth ones; the LoRA and sparsity figures are printed (what we measure, not what the paper expects)."""
    from steering.dopamine_digits import run

    r = run(0, hidden=32, pretrain_steps=400, adapt_steps=200)
    print("\n", r.to_json())
    assert r.parameters["gates"] == 2 * 2 * 32 and r.parameters["LoRA"] > 5 * r.parameters["gates"]
    assert abs(r.accuracy["gates hard"] - r.accuracy["gates smooth"]) <= 0.02
    assert r.accuracy["frozen (rotated)"] > 0.5 and r.accuracy["LoRA"] > 0.5  # the base and LoRA learned digits
    assert 0 < r.strongly_active["gates hard"] < 1
    # the discordant images account for the accuracy difference exactly
    diff = (r.accuracy["gates hard"] - r.accuracy["frozen (rotated)"]) * r.test_images
    assert r.test_images == 540 and r.fixed - r.broken == round(diff)


# ----------------------------------------------------------------------------- the language model


def test_mode_file_reading_and_its_errors(tmp_path) -> None:
    from interp.errors import InterpError
    from steering.dopamine_lm import ModeExample, read_mode, write_mode

    good = [ModeExample("Hello there,", " amigo mío."), ModeExample("", " Solo texto.")]
    path = write_mode(tmp_path / "mode.jsonl", good)
    assert read_mode(path) == good
    (tmp_path / "text.jsonl").write_text('{"text": "hola"}\n\n')
    assert read_mode(tmp_path / "text.jsonl") == [ModeExample("", "hola")]
    for content, needle in [("not json\n", ":1: not a JSON object"), ('[1, 2]\n', "not a JSON object"),
                            ('{"prompt": "a"}\n', "completion"), ('{"completion": "  "}\n', "completion"),
                            ("\n", "no examples")]:
        (tmp_path / "bad.jsonl").write_text(content)
        with pytest.raises(InterpError, match=needle):
            read_mode(tmp_path / "bad.jsonl")
    with pytest.raises(InterpError, match="does not exist"):
        read_mode(tmp_path / "missing.jsonl")


def test_code_switch_examples_pair_english_prompts_with_target_completions() -> None:
    from interp.language_id import language_share
    from steering.dopamine_lm import code_switch_examples

    ex = code_switch_examples("es", 24)
    assert len(ex) >= 20 and all(e.completion.startswith(" ") for e in ex)
    assert language_share([e.prompt for e in ex], "en", ["en", "es"]) > 0.8
    assert language_share([e.completion for e in ex], "es", ["en", "es"]) > 0.8


def test_gate_training_leaves_the_base_model_bit_for_bit(smollm2) -> None:
    from steering.dopamine_lm import LmGateSettings, ModeExample, train_lm_gates

    before = {k: v.clone() for k, v in smollm2.hf.state_dict().items()}
    flags = [p.requires_grad for p in smollm2.hf.parameters()]
    ex = [ModeExample("The weather today is", " muy bonito y soleado."), ModeExample("I like", " la comida.")]
    trained = train_lm_gates(smollm2, ex, LmGateSettings(layers=[3, 4], steps=3, batch_size=2))
    assert len(trained.losses) == 3 and trained.parameters == 2 * 2 * 1536
    assert [p.requires_grad for p in smollm2.hf.parameters()] == flags
    after = smollm2.hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    edits = trained.edits()
    assert [e.site for e in edits] == ["blocks.3.mlp.hook_post", "blocks.4.mlp.hook_post"] and edits[0].hard


def test_calibration_equals_a_full_capture(smollm2) -> None:
    from steering import dopamine_lm as L

    ex = [L.ModeExample("The weather today is", " muy bonito y soleado."), L.ModeExample("I", " como pan.")]
    ids, mask, _ = L._encode(smollm2, ex, 64)
    sites = ["blocks.2.mlp.hook_post", "blocks.7.mlp.hook_post"]
    got = L._calibrate(smollm2, sites, ids, mask)
    from interp.hooks import hooks, site_hook

    full = {s: [] for s in sites}  # brute force: every real token's activations, in one pass
    with torch.no_grad():
        regs = [(lambda s=s: site_hook(smollm2.adapter.resolve(s), lambda x, s=s: full[s].append(x[mask.bool()])))
                for s in sites]
        with hooks(regs):
            smollm2.hf(input_ids=ids, attention_mask=mask, use_cache=False)
    for s in sites:
        a = full[s][0].float()
        torch.testing.assert_close(got[s][0], a.min(0).values)
        assert abs(got[s][1] - float(a.std(unbiased=False))) < 1e-4 * float(a.std())


@pytest.mark.slow
def test_gates_put_smollm2_in_the_spanish_mode(smollm2, tmp_path) -> None:
    """Gates trained on English text continued in Spanish make held-out neutral English prompts continue in
    Spanish, beyond the frozen model; the perplexity cost is printed; the recipe round-trips."""
    from interp.language_id import language_share
    from interp.recipes import load_recipe, save_recipe
    from steering.dopamine_lm import LmGateSettings, code_switch_examples, train_lm_gates
    from steering.language_eval import GENERATION, continuation_perplexity
    from steering.neutral_prompts import NEUTRAL

    # test size: 20 steps of 4 examples at lr 0.05 (measured: es share 0.75 against 0.00 frozen);
    # benchmarks/dopamine_lm.py trains 80 steps of 8 at 0.02 on 256 examples, against LoRA and ActAdd
    trained = train_lm_gates(smollm2, code_switch_examples("es", 64), LmGateSettings(steps=20, batch_size=4, lr=0.05))
    edits = trained.edits()
    prompts = NEUTRAL["en"][:8]
    rows = {}
    for name, e in [("frozen", []), ("gates", edits)]:
        out = interp.generate(smollm2, prompts, e, **GENERATION)
        rows[name] = (language_share(out, "es", ["en", "es", "fr", "de"]),
                      continuation_perplexity(smollm2, prompts, out), out)
    print(f"\n{'':8s} {'es share':>8s} {'ppl':>7s}  sample   (gates: {trained.parameters} parameters, loss "
          f"{trained.losses[0]:.2f} → {trained.losses[-1]:.2f})")
    for name, (share, ppl, out) in rows.items():
        print(f"{name:8s} {share:8.2f} {ppl:7.2f}  {out[0][:60]!r}")
    assert rows["gates"][0] >= rows["frozen"][0] + 0.25
    path = save_recipe(tmp_path / "es.safetensors", edits, smollm2, {"writer": "dopamine"})
    loaded = load_recipe(path, smollm2)
    assert all(torch.equal(a.thresholds, b.thresholds) and torch.equal(a.gains, b.gains) and b.hard
               for a, b in zip(edits, loaded))
    assert interp.generate(smollm2, prompts[:2], loaded, **GENERATION) == rows["gates"][2][:2]


# ----------------------------------------------------------------------------- issue 30: the gate site


def test_gates_at_the_pre_site_act_on_the_pre_activation() -> None:
    """A planted MLP: unit 0's pre-activation is x0 − 1, unit 1's is −x0. A gain of −1 that passes everything
    gives ReLU(−z) at the pre site (gate then ReLU) and −ReLU(z) at the post site (ReLU then gate); a threshold
    of 0.5 closes the units whose pre-activation is at most 0.5."""
    from torch import nn

    from steering.dopamine_digits import Gated, _pre_activations

    base = nn.Sequential(nn.Linear(64, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 10))
    with torch.no_grad():
        for layer in (base[0], base[2]):
            layer.weight.zero_(), layer.bias.zero_()
        base[0].weight[0, 0], base[0].bias[0], base[0].weight[1, 0] = 1.0, -1.0, -1.0
        base[2].weight.copy_(torch.eye(2))
    x = torch.zeros(5, 64)
    x[:, 0] = torch.tensor([-2.0, 0.0, 1.2, 1.8, 3.0])
    z = x[:, 0:1] * torch.tensor([1.0, -1.0]) + torch.tensor([-1.0, 0.0])  # the planted pre-activations
    assert torch.allclose(_pre_activations(base, x)[0], z)
    out = {}
    for site in ("pre", "post"):
        gated = Gated(base, GateSettings(site=site))
        with torch.no_grad():
            gated.gates[0].gain.fill_(-1.0)
            gated.gates[0].threshold.fill_(-1e9)
            gated.gates[0].hard = gated.gates[1].hard = True
            out[site] = gated.hidden(x)[0]
    assert torch.allclose(out["pre"], torch.relu(-z)) and torch.allclose(out["post"], -torch.relu(z))
    gated = Gated(base, GateSettings(site="pre"))
    with torch.no_grad():
        gated.gates[0].threshold.fill_(0.5)
        gated.gates[0].hard = True
        h = gated.hidden(x)[0]
    assert torch.allclose(h, torch.relu(z) * (z > 0.5))  # unit 0 at x0 = 1.2 (z = 0.2 > 0) is closed
    assert h[2, 0] == 0 and torch.relu(z)[2, 0] > 0
    with pytest.raises(ValueError, match="gate site"):
        Gated(base, GateSettings(site="middle"))


def test_digits_experiment_runs_with_gates_before_the_relu(capsys) -> None:
    from steering.dopamine_digits import main

    assert main(["--hidden", "8", "--pretrain-steps", "30", "--adapt-steps", "25", "--gate-site", "pre"]) == 0
    import json

    r = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert r["gate_site"] == "pre" and r["parameters"]["gates"] == 2 * 2 * 8 and 0 <= r["accuracy"]["gates hard"] <= 1


def test_steer_dopamine_gate_site_option_names_the_lm_site() -> None:
    from cli import dopamine
    from cli.main import build_parser

    args = build_parser().parse_args(["steer", "dopamine", "--train", "switch:es", "--out", "g.safetensors",
                                      "--gate-site", "pre"])
    assert dopamine.SITES[args.gate_site] == "mlp.hook_pre"
    assert build_parser().parse_args(["steer", "dopamine", "--train", "x.jsonl", "--out", "g.st"]).gate_site == "post"
