"""`interp eval`: where and how hard to steer, measured (issue 31) — a sweep of layers × strengths through
`steering.evaluate`, written as a table (CSV, Markdown), plots and the recommended recipe.

Families: `--recipe FILE` (every edit's strength × s, `interp.edits.with_strength`; the recipe's own sites, so no
layer axis), `--method actadd --contrast POS.txt NEG.txt` (ActAdd: the contrast direction at `blocks.L.<--site>` for
each of `--layers`, added with scale s; a bare `--contrast` means the same), `--method clamp --neuron L:N` (MLP neuron
N of layer L held at the value s, `steering.clamps.concept_clamp`; one layer, and s = 0 is a clamp at 0, not the
unsteered model) or `--method brain-axis --atlas DIR --axis K` (s × --norm-fraction × the layer's mean residual norm
along the axis's adapter direction at `blocks.L.hook_resid_post`, `steering.axes.atlas_axis_edits`, for each of
`--layers`, default the atlas's adapter layers). Effects: `language:es` (share of continuations in Spanish, with the
matched reference for perplexity), `token:' dog'` (next-token probability), `mention:dog,dogs`, `zipf:en` (mean
Zipf word frequency of the continuations, `wordfreq`; unknown words count 0). Fluency (perplexity under the
unsteered model, distinct-2) and side effects (KL on neutral prompts; with `--capability`, accuracy on the held-out
capability set `steering.capability`, floored at `--min-capability` × the unsteered accuracy) are measured.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from cli.argtypes import count, finite, positive
from cli.base import error
from cli.edits import read_prompts
from cli.loading import load

RECIPE_LAYER = -1  # the layer column of a recipe sweep: the recipe's own sites


METHODS = ("actadd", "clamp", "brain-axis")


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="sweep layers × strengths of a steering recipe or method and recommend one",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")
    family = e.add_mutually_exclusive_group()
    family.add_argument("--recipe", metavar="FILE", help="a recipe; its strength is swept")
    family.add_argument("--method", choices=METHODS,
                        help="actadd (needs --contrast), clamp (needs --neuron) or brain-axis (needs --atlas, --axis)")
    e.add_argument("--contrast", nargs=2, metavar=("POS.txt", "NEG.txt"),
                   help="actadd: one text per line on each side; the direction is swept over --layers "
                        "(--contrast alone means --method actadd)")
    e.add_argument("--neuron", metavar="L:N",
                   help="clamp: MLP neuron N of layer L (e.g. 29:808), held at each strength as its value at "
                        "blocks.L.mlp.hook_post; strength 0 is a real clamp at 0, not the unsteered model")
    e.add_argument("--atlas", metavar="DIR", help="brain-axis: a brain-axes atlas (interp analyze --probe brain-axes)")
    e.add_argument("--axis", type=count, metavar="K", help="brain-axis: the axis to steer along (see table.txt)")
    e.add_argument("--norm-fraction", type=finite, default=0.25, metavar="F",
                   help="brain-axis: strength 1 adds F × the layer's mean residual norm on the prompts (default 0.25)")
    e.add_argument("--site", default="hook_resid_pre", help="actadd: the per-layer site (default hook_resid_pre)")
    e.add_argument("--layers", default=None,
                   help="actadd, brain-axis: layers, e.g. 2-10 or 3,6,9 (default: every third for actadd, the "
                        "atlas's adapter layers for brain-axis)")
    e.add_argument("--strengths", required=True, metavar="S,S,...",
                   help="strengths to try, e.g. 0,2,4,8 (clamp: the neuron's values)")
    e.add_argument("--effect", required=True, metavar="KIND:ARG",
                   help="language:CODE, token:TEXT (mind the leading space), mention:WORD,WORD or zipf:LANG")
    e.add_argument("--prompts", default=None, metavar="FILE",
                   help="prompts, one per line (default: the 16 held-out neutral English prompts)")
    e.add_argument("--max-new-tokens", type=positive, default=32, metavar="N")
    e.add_argument("--max-ppl-ratio", type=float, default=1.5, metavar="R",
                   help="bound on perplexity (× the matched reference for language:, else × unsteered; default 1.5)")
    e.add_argument("--max-kl", type=float, default=1.0, metavar="NATS",
                   help="bound on the KL side effect on neutral prompts (default 1.0)")
    e.add_argument("--min-distinct2", type=float, default=0.7, metavar="D", help="floor on distinct-2 (default 0.7)")
    e.add_argument("--capability", action="store_true",
                   help="also score accuracy on the held-out capability set (steering.capability: sums, copying, "
                        "facts) and admit only settings keeping --min-capability of the unsteered accuracy")
    e.add_argument("--min-capability", type=finite, default=None, metavar="F",
                   help="floor on capability accuracy as a fraction of the unsteered model's (default 0.8; "
                        "implies --capability)")
    e.add_argument("--out", required=True, help="folder for table.csv, table.md, plots and recommended.safetensors")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def _numbers(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise error(f"--strengths takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise error("--strengths needs at least one number")
    return values


def _check(args) -> None:
    """The family's companion options, before the model is loaded; sets args.method (a bare --contrast: actadd)."""
    if args.method is None and not args.recipe:
        if not args.contrast:
            raise error("interp eval needs --recipe FILE or --method actadd|clamp|brain-axis (or --contrast POS NEG)")
        args.method = "actadd"
    given = {"--contrast": args.contrast, "--neuron": args.neuron, "--atlas": args.atlas,
             "--axis": args.axis is not None}
    allowed = {None: (), "actadd": ("--contrast",), "clamp": ("--neuron",), "brain-axis": ("--atlas", "--axis")}
    stray = [name for name, value in given.items() if value and name not in allowed[args.method]]
    if stray:
        family = "--recipe" if args.method is None else f"--method {args.method}"
        raise error(f"{', '.join(stray)} does not go with {family}")
    if args.method == "actadd" and not args.contrast:
        raise error("--method actadd needs --contrast POS.txt NEG.txt")
    if args.method == "clamp":
        if not args.neuron:
            raise error("--method clamp needs --neuron L:N (e.g. 29:808)")
        layer, sep, neuron = args.neuron.partition(":")
        if not sep or not layer.strip().isdigit() or not neuron.strip().isdigit():
            raise error(f"--neuron {args.neuron!r}: use LAYER:NEURON, e.g. 29:808")
        args._neuron = (int(layer), int(neuron))
        if args.layers:
            raise error("--layers does not go with --method clamp: the layer is --neuron's")
    if args.method == "brain-axis":
        if not args.atlas or args.axis is None:
            raise error("--method brain-axis needs --atlas DIR (from interp analyze --probe brain-axes) and --axis K")
        if not Path(args.atlas).is_dir():
            raise error(f"--atlas {args.atlas} is not a folder")
        if args.norm_fraction <= 0:
            raise error("--norm-fraction must be positive")
    if args.min_capability is not None:
        args.capability = True
        if args.min_capability < 0:
            raise error("--min-capability must be 0 or more")


def _effect(spec: str, model):
    """(scorer, the matched reference's prompts or None)."""
    from steering.evaluate import LanguageShare, MentionRate, TokenProbability, WordFeature
    from steering.neutral_prompts import NEUTRAL

    kind, sep, arg = spec.partition(":")
    if not sep or not arg:
        raise error(f"--effect {spec!r}: use language:CODE, token:TEXT, mention:WORD,WORD or zipf:LANG")
    if kind == "language":
        return LanguageShare(arg), NEUTRAL.get(arg)
    if kind == "token":
        ids = model.tokenizer(arg, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise error(f"--effect token:{arg!r} is {len(ids)} tokens in this model; give one token")
        return TokenProbability(ids, name=f"p({arg!r})"), None
    if kind == "mention":
        return MentionRate([w for w in arg.split(",") if w.strip()]), None
    if kind == "zipf":
        from wordfreq import available_languages, zipf_frequency

        if arg not in available_languages():
            known = ", ".join(sorted(available_languages()))
            raise error(f"--effect zipf:{arg}: wordfreq has no {arg!r}; it has {known}")
        return WordFeature(lambda word: float(zipf_frequency(word, arg)), name=f"zipf({arg})"), None
    raise error(f"--effect {spec!r}: the kind is language, token, mention or zipf")


def _family(args, model, prompts):
    """(family, layers, whether strength 0 is the unsteered model, a description)."""
    import interp
    from interp.edits import with_strength
    from interp.recipes import load_recipe

    if args.recipe:
        edits = load_recipe(args.recipe, model)
        return (lambda layer, s: [with_strength(e, s) for e in edits]), [RECIPE_LAYER], True, f"recipe {args.recipe}"
    n = model.adapter.n_layers
    if args.method == "clamp":
        from steering.clamps import clamp_site, concept_clamp

        layer, neuron = args._neuron
        if not 0 <= layer < n or not 0 <= neuron < model.adapter.d_mlp:
            raise error(f"--neuron {args.neuron}: this model has layers 0..{n - 1} and neurons "
                        f"0..{model.adapter.d_mlp - 1}")
        site = clamp_site(model)
        return ((lambda layer, s: [concept_clamp(layer, neuron, s, site=site)]), [layer], False,
                f"clamp of neuron {layer}:{neuron} at blocks.{layer}.{site} (strength = its value; 0 is a clamp at 0)")
    if args.method == "brain-axis":
        return _brain_axis_family(args, model, prompts)
    from steering.actadd import contrast_direction

    pos, neg = read_prompts(args.contrast[0], "--contrast positive"), read_prompts(args.contrast[1], "--contrast negative")
    layers = model.adapter.parse_layers(args.layers) if args.layers else list(range(1, n, 3))
    directions = {layer: contrast_direction(model, pos, neg, f"blocks.{layer}.{args.site}") for layer in layers}
    return ((lambda layer, s: [interp.Add(directions[layer].site, directions[layer].vector, s)]), layers, True,
            f"ActAdd {args.contrast[0]} − {args.contrast[1]} at blocks.L.{args.site}")


def _brain_axis_family(args, model, prompts):
    """Per layer, the axis's Add at strength 1 (`atlas_axis_edits`: one residual norm per layer), scaled by s."""
    from atlases import load_atlas
    from interp.edits import with_strength
    from interp.errors import InterpError
    from steering.axes import atlas_axis_edits

    try:
        atlas = load_atlas(args.atlas)
    except (InterpError, OSError, ValueError, KeyError) as exc:
        raise error(f"--atlas {args.atlas}: not a readable atlas ({exc})") from None
    info = atlas.params.get("adapters") if atlas.method == "brain-axes" else None
    fitted = sorted(int(l) for l in (info or {}).get("layers", {}))
    layers = model.adapter.parse_layers(args.layers) if args.layers else fitted
    if info is not None and (not layers or set(layers) - set(fitted)):
        raise error(f"--atlas {args.atlas} has adapters at layers {', '.join(map(str, fitted)) or 'none'}; "
                    f"--layers must be among them")
    unit_edits, notes = {}, []
    for layer in layers or [None]:  # no adapters: atlas_axis_edits says what is wrong with the atlas
        try:
            unit_edits[layer], note = atlas_axis_edits(model, atlas, args.axis, 1.0, prompts, layer=layer,
                                                       norm_fraction=args.norm_fraction)
        except InterpError as exc:
            raise error(f"--atlas {args.atlas}: {exc}") from None
        notes.append(note)

    def family(layer, s):
        return [] if s == 0 else [with_strength(e, s) for e in unit_edits[layer]]

    return family, layers, True, f"brain axis {args.axis} of {args.atlas} (" + "; ".join(notes) + ")"


def _plots(result, effect: str, costs: list[str]) -> dict[str, bytes]:
    from interp.plotting import png, subplots

    fig, axes = subplots(ncols=2, figsize=(10, 4))
    for layer in sorted({s.layer for s in result.settings}):
        rows = sorted((s for s in result.settings if s.layer == layer), key=lambda s: s.strength)
        label = "recipe" if layer == RECIPE_LAYER else f"layer {layer}"
        axes[0].plot([s.strength for s in rows], [result.value(s, effect) for s in rows], marker="o", label=label)
        axes[1].plot([s.strength for s in rows], [result.value(s, costs[0]) for s in rows], marker="o", label=label)
    axes[0].set(xlabel="strength", ylabel=effect, title="effect")
    axes[1].set(xlabel="strength", ylabel=costs[0], title="fluency cost")
    axes[0].legend(fontsize="small")
    curves = png(fig)
    fig, ax = subplots(figsize=(5, 4))
    ax.scatter([result.value(s, costs[0]) for s in result.settings], [result.value(s, effect) for s in result.settings],
               color="0.7", label="settings")
    front = sorted(result.pareto(effect, costs), key=lambda s: result.value(s, costs[0]))
    ax.plot([result.value(s, costs[0]) for s in front], [result.value(s, effect) for s in front], "o-", color="C3",
            label="Pareto front")
    ax.set(xlabel=costs[0], ylabel=effect, title="effect against fluency cost")
    ax.legend(fontsize="small")
    return {"effect.png": curves, "pareto.png": png(fig)}


def command(args) -> int:
    import interp
    from interp.cache import atomic_path
    from interp.recipes import save_recipe
    from steering.evaluate import Distinct2, NeutralKL, Outputs, Perplexity, sweep
    from steering.neutral_prompts import NEUTRAL

    strengths = _numbers(args.strengths)
    _check(args)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "table.md").exists())):
        raise error(f"{out} exists and is not an interp eval folder; choose another --out")
    prompts = read_prompts(args.prompts, "--prompts") if args.prompts else NEUTRAL["en"]
    model = load(args)
    effect, matched = _effect(args.effect, model)
    family, layers, zero_unsteered, described = _family(args, model, prompts)
    neutral = [p for p in NEUTRAL["en"] if p not in prompts][:8] or NEUTRAL["en"][:8]
    scorers = [effect, Perplexity(), Distinct2(), NeutralKL(neutral)]
    capability = None
    if args.capability:
        from steering.capability import Capability

        scorers.append(capability := Capability())
    generation = {"max_new_tokens": args.max_new_tokens}
    reference = None
    if matched is not None and not args.prompts:
        reference = interp.generate(model, matched, (), max_new_tokens=args.max_new_tokens, repetition_penalty=1.3)
    result = sweep(model, family, prompts, layers, strengths, scorers, reference_texts=reference,
                   generation=generation, progress=not args.quiet)
    bounds, floors = {"ppl": args.max_ppl_ratio, "KL neutral": args.max_kl}, {"distinct-2": args.min_distinct2}
    limits = f"perplexity ≤ {args.max_ppl_ratio:g} ×, KL ≤ {args.max_kl:g}, distinct-2 ≥ {args.min_distinct2:g}"
    if reference is None:  # no matched reference: perplexity bounded as a ratio to the unsteered model's
        base = [s for s in result.settings if s.strength == 0] if zero_unsteered else []
        if base:
            result.reference["ppl"] = base[0].mean("ppl")
        else:  # no unsteered setting in the sweep (a clamp at 0 is not one): generate the unsteered continuations
            texts = interp.generate(model, prompts, (), max_new_tokens=args.max_new_tokens, repetition_penalty=1.3)
            result.reference["ppl"] = float(Perplexity()(Outputs(model, prompts, (), texts)).nanmean())
    capability_info = None
    if capability is not None:
        unsteered = float(capability(Outputs(model, prompts, (), [""] * len(prompts))).mean())
        ratio = 0.8 if args.min_capability is None else args.min_capability
        floors["capability"] = ratio * unsteered
        capability_info = {"unsteered": unsteered, "min_ratio": ratio, "floor": ratio * unsteered}
        limits += f", capability ≥ {ratio:g} × unsteered {unsteered:.3g} (= {ratio * unsteered:.3g})"
    best = result.recommend(effect.name, bounds, floors)
    if best is not None and best.strength == 0 and zero_unsteered:
        best = None  # only the unsteered model keeps the bounds
    text = _report(result, effect.name, layers, best, limits, described, args)
    with atomic_path(out, directory=True) as tmp:
        rows = result.table()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        (tmp / "table.csv").write_text(buf.getvalue(), encoding="utf-8")
        (tmp / "table.md").write_text(text, encoding="utf-8")
        for name, data in _plots(result, effect.name, ["ppl", "KL neutral"]).items():
            (tmp / name).write_bytes(data)
        if best is not None:
            save_recipe(tmp / "recommended.safetensors", family(best.layer, best.strength), model,
                                       {"writer": "interp eval", "effect": args.effect, "layer": best.layer,
                                        "strength": best.strength, "argv": getattr(args, "argv", [])})
        (tmp / "eval.json").write_text(json.dumps({"family": {"method": args.method or "recipe", "what": described},
                                                   "recommended": None if best is None else
                                                   {"layer": best.layer, "strength": best.strength},
                                                   "bounds": bounds, "floors": floors, "capability": capability_info,
                                                   "unsteered_ppl": result.reference.get("ppl") if reference is None
                                                   else None, "rows": rows}, indent=1),
                                        encoding="utf-8")
    print(text)
    print(f"wrote {out}")
    return 0


def _report(result, effect: str, layers: list, best, limits: str, described: str, args) -> str:
    from interp.errors import InterpError

    lines = [f"# interp eval: {args.effect} on {args.model}", "", f"Family: {described}.", "", result.markdown(), "",
             "| layer | slope per unit strength | 95 % interval | consistency | R² |", "|---|---|---|---|---|"]
    for layer in layers:
        if len({s.strength for s in result.settings if s.layer == layer}) >= 2:
            name = "recipe" if layer == RECIPE_LAYER else str(layer)
            try:
                st = result.steerability(effect, layer)
            except InterpError:  # no prompt has the effect at every strength (e.g. zipf: with no words)
                lines.append(f"| {name} | n/a | n/a | n/a | n/a |")
                continue
            lines.append(f"| {name} | {st.slope:.4g} | [{st.ci[0]:.3g}, {st.ci[1]:.3g}] | {st.consistency:.2f} | "
                         f"{st.r2:.2f} |")
    front = result.pareto(effect, ["ppl", "KL neutral"])
    lines += ["", "Pareto front (effect vs perplexity and KL): " +
              ", ".join(f"({'recipe' if s.layer == RECIPE_LAYER else s.layer}, {s.strength:g})" for s in front)]
    if best is None:
        lines.append(f"No setting keeps {limits}; nothing recommended.")
    else:
        where = "the recipe" if best.layer == RECIPE_LAYER else f"layer {best.layer}"
        lines.append(f"Recommended: {where} at strength {best.strength:g} ({effect} {result.value(best, effect):.3g}; "
                     f"within {limits}); recommended.safetensors holds it.")
    return "\n".join(lines) + "\n"
