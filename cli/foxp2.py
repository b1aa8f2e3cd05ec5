"""`interp analyze --probe foxp2` and `interp steer foxp2`: Neural FOXP2 from the command line.

analyze writes an atlas folder: atlas.json (settings, spectra numbers, window, localisation),
tensors.safetensors (per window layer: target directions, d̄, N_T, N_EN), spectra.png,
report.html, recipe.safetensors (the edits at --strength), and with --evaluate the
language-steering table (table.txt, and in atlas.json).
"""

from __future__ import annotations

import argparse
import html
import math
import tempfile
from pathlib import Path

from interp.errors import InterpError
from cli import paper
from cli.argtypes import count, finite, positive
from cli.loading import load


def add_options(group: argparse._ArgumentGroup, *, steer: bool) -> None:
    """The FOXP2 settings, shared by analyze and steer."""
    group.add_argument("--target", help="target language (ISO 639-1 / Bible code), e.g. es, fr" +
                       ("" if steer else " (foxp2)"))
    group.add_argument("--window", metavar="LAYERS", help="intervention layers, e.g. 19-26 (default: chosen from the "
                       "difference spectra: the quarter of the layers with the highest energy × stability)")
    group.add_argument("--strength", default="auto", metavar="ALPHA|auto",
                       help="α, the positive shift; auto (default): the smallest of 0.5 … 3 that makes ≥ 90%% of "
                            "continuations of calibration prompts (kept apart from the test prompts) the target")
    group.add_argument("--beta", type=finite, default=None,
                       help="β: the negative shift on English neurons (default 1)" if steer else
                       "β: foxp2's negative shift on English neurons (default 1); snrf's strength (default 0.5)")
    group.add_argument("--sae-steps", type=positive, default=300, help="SAE training steps per layer (default 300)")
    group.add_argument("--seed", type=count, default=0, help="seed of SAE training and bootstrap (default 0)")
    group.add_argument("--lift", default="difference", choices=["difference", "log_ratio"],
                       help="feature selectivity: M_T − M_EN or log(M_T / M_EN)")
    group.add_argument("--sae", action="append", default=[], metavar="LAYER=DIR",
                       help="use an SAE-Lens SAE from disk for a window layer instead of training one (repeatable)")
    group.add_argument("--foxp2-verses", type=positive, default=96, metavar="N",
                       help="parallel Bible verses for the directions and the SAEs (default 96)")
    group.add_argument("--site", choices=["neurons", "resid"], default=None,
                       help="where the differences are taken and the edits act: neurons (default: the MLP neurons, "
                            "mlp.hook_post) or resid (the paper's h_l, the residual stream hook_resid_post; "
                            "N_T / N_EN are then residual dimensions)" + ("" if steer else " (foxp2)"))
    group.add_argument("--window-rule", choices=["best-run", "low-to-mid"], default=None,
                       help="how the window is chosen without --window: best-run (default: the quarter of the layers "
                            "in the first 90%% with the highest mean energy × stability) or low-to-mid (the paper's: "
                            "in the first two thirds, the run around the best layer of layers within 0.8 of it)")
    group.add_argument("--tracing", choices=["contribution", "decoder"], default=None,
                       help="SAE features → units: contribution (default: mean activation × write weight) or "
                            "decoder (the paper's largest |W_dec| entries)")
    group.add_argument("--english-directions", type=count, default=None, metavar="K",
                       help="the compensating shift's English directions: 1 (default: −d̄) or K ≥ 2: the top K of "
                            "the English side of the difference spectrum (0: the eigengap rank, at least 2: the "
                            "paper's top-k, what --paper uses)")
    if not steer:
        group.add_argument("--evaluate", action="store_true",
                           help="also generate on held-out neutral prompts: target share and perplexity for "
                                "FOXP2, its parts, a random direction and ActAdd (a few minutes)")


def settings_from(args, model=None):
    """Foxp2Settings from the options: --paper first switches every marked choice to the paper's, then the
    options given explicitly (--site, --window-rule, --tracing, --english-directions) win."""
    from probes.foxp2 import SITES, Foxp2Settings

    window = model.adapter.parse_layers(args.window) if args.window and model is not None else None
    settings = paper.apply(Foxp2Settings(target=args.target, window=window, sae_steps=args.sae_steps, seed=args.seed,
                                         lift=args.lift), args)
    if getattr(args, "site", None):
        settings.site = SITES[args.site]
    if getattr(args, "window_rule", None):
        settings.window_rule = args.window_rule
    if getattr(args, "tracing", None):
        settings.tracing = args.tracing
    k = getattr(args, "english_directions", None)
    if k is not None:
        settings.english_directions = "mean" if k == 1 else "top-k"
        settings.english_k = k if k >= 2 else None
    return settings


def check_args(args) -> None:
    """Fail before any model loads: a target the Bible has, numbers that are numbers, SAE folders that exist."""
    from interp.corpora import bible_target

    target = args.target
    if not target:
        raise InterpError("foxp2 needs --target LANG, e.g. --target es")
    bible_target(target, f"--target {target!r}")
    if args.beta is None:
        args.beta = 1.0
    if not math.isfinite(args.beta):
        raise InterpError("--beta must be a finite number")
    if args.sae_steps < 1 or args.foxp2_verses < 8:
        raise InterpError("--sae-steps must be at least 1 and --foxp2-verses at least 8")
    args._saes = {}
    for spec in args.sae:
        layer, _, folder = spec.partition("=")
        if not layer.strip().isdigit() or not folder:
            raise InterpError(f"bad --sae {spec!r}: use LAYER=DIR, e.g. 20=saes/layer20")
        if not (Path(folder) / "cfg.json").is_file():
            raise InterpError(f"--sae {spec}: {folder} is not an SAE-Lens SAE folder (no cfg.json)")
        args._saes[int(layer)] = folder
    if args.strength != "auto":
        try:
            args.strength = float(args.strength)
        except ValueError:
            raise InterpError(f"--strength must be a number or auto, not {args.strength!r}") from None
        if not math.isfinite(args.strength):
            raise InterpError("--strength must be a finite number")


def build(args, model):
    """Run the analysis (and the strength calibration when --strength auto); return
    (analysis, window layers, texts, edits); args.strength holds the α used."""
    from probes.foxp2 import analyze
    from probes.language_counts import bible_texts
    from steering.foxp2 import calibrate_strength, foxp2_edits, window_from_analysis
    from steering.neutral_prompts import CALIBRATION

    settings = settings_from(args, model)
    texts = bible_texts(["en", settings.target], limit=args.foxp2_verses)
    analysis = analyze(model, texts, settings, saes=args._saes)
    window = window_from_analysis(analysis)
    if args.strength == "auto":
        args.strength, sweep = calibrate_strength(model, window, settings.target, CALIBRATION, beta=args.beta)
        print("# strength calibration (α: target share): " + ", ".join(f"{a:g}: {s:.2f}" for a, s in sweep))
    return analysis, window, texts, foxp2_edits(window, alpha=args.strength, beta=args.beta)


def recipe_bytes(edits, model, provenance: dict) -> bytes:
    from interp.recipes import save_recipe

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.safetensors"
        save_recipe(path, edits, model, provenance)
        return path.read_bytes()


def provenance(args, analysis) -> dict:
    return {"writer": "steering.foxp2", "target": analysis.target, "alpha": args.strength, "beta": args.beta,
            "window": analysis.window, "corpus": f"parallel Bible en/{analysis.target}, {args.foxp2_verses} verses",
            "seed": args.seed, "sae_steps": args.sae_steps, "lift": args.lift, "site": analysis.site,
            "paper_mode": analysis.settings.provenance()}


_REPORT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>interp FOXP2: {model}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 64em; }} pre {{ font-size: 12px; }}</style>
</head><body><h1>Neural FOXP2 — {model}, English → {target}</h1>
<p>Window layers {window}; α = {alpha:g}, β = {beta:g}. Spectra of the English → {target} activation differences
(left), energy / stability / effective rank over depth (right):</p>
<img alt="spectra" src="spectra.png" style="max-width:100%">
<h2>Per layer</h2><pre>{table}</pre>
{evaluation}</body></html>"""


def analyze_command(args, out: Path) -> int:
    import interp
    from atlases import Atlas
    from probes.foxp2 import spectra_png
    from steering.foxp2 import foxp2_table

    check_args(args)
    model = load(args)
    analysis, window, texts, edits = build(args, model)
    table = (foxp2_table(model, window, analysis.target, texts, alpha=args.strength, beta=args.beta)
             if args.evaluate else None)
    tensors = {}
    for w in window:
        site = w.site_name
        tensors[f"{site}/directions"] = w.directions.contiguous()
        tensors[f"{site}/mean_diff"] = w.mean_diff.contiguous()
        tensors[f"{site}/english_directions"] = w.english_directions.contiguous()
    params = {**analysis.summary(), "alpha": args.strength, "beta": args.beta,
              "evaluation": table.to_json() if table else None, "paper_mode": analysis.settings.provenance()}
    atlas = Atlas(model=model.name, revision=model.revision, sites=[f"blocks.{l}.{analysis.site}" for l in analysis.window],
                  method="foxp2", tensors=tensors, params=params)
    ev = "" if table is None else f"<h2>Held-out neutral prompts</h2><pre>{html.escape(table.text())}</pre>"
    report = _REPORT.format(model=html.escape(model.name), target=html.escape(analysis.target),
                            window=analysis.window, alpha=args.strength, beta=args.beta,
                            table=html.escape(analysis.table()), evaluation=ev)
    binary = {"spectra.png": spectra_png(analysis),
              "recipe.safetensors": recipe_bytes(edits, model, provenance(args, analysis))}
    extra = {"report.html": report, **({"table.txt": table.text() + "\n"} if table else {})}
    atlas.save(out, extra_files=extra, binary_files=binary)
    print(analysis.table())
    if table is not None:
        print(table.text())
    print(f"wrote {out}: window {analysis.window}, "
          f"{sum(len(f.target_neurons) for f in analysis.layers.values())} target and "
          f"{sum(len(f.english_neurons) for f in analysis.layers.values())} English neurons; "
          f"steer with: interp steer --recipe {out / 'recipe.safetensors'} --prompt ...")
    return 0


def steer_edits(args, model, notes: list[str]) -> list:
    """interp steer foxp2: analyse (minutes on a CPU), return the edits (and, for --save-recipe, their provenance)."""
    print(f"# FOXP2: localising English → {args.target} in {model.name} (SAEs on the window layers; "
          "save the recipe with --save-recipe or `interp analyze --probe foxp2` to skip this next time)")
    analysis, window, _, edits = build(args, model)
    args._provenance = provenance(args, analysis)
    if analysis.settings.is_paper():
        notes.append("paper mode: " + ", ".join(f"{k}={v}" for k, v in analysis.settings.provenance()["choices"].items()))
    notes.append(f"foxp2 → {args.target} at {analysis.site}: window {analysis.window}, α = {args.strength:g}, β = {args.beta:g}, "
                 f"{sum(len(w.target_neurons) for w in window)} target / "
                 f"{sum(len(w.english_neurons) for w in window)} English neurons")
    return edits
