"""`interp eval`: where and how hard to steer, measured (issue 31) — a sweep of layers × strengths through
`steering.evaluate`, written as a table (CSV, Markdown), plots and the recommended recipe.

Families: `--recipe FILE` (every edit's strength × s, `interp.edits.with_strength`; the recipe's own sites, so no
layer axis) or `--contrast POS.txt NEG.txt` (ActAdd: the contrast direction at `blocks.L.<--site>` for each of
`--layers`, added with scale s). Effects: `language:es` (share of continuations in Spanish, with the matched
reference for perplexity), `token:' dog'` (next-token probability), `mention:dog,dogs`. Fluency (perplexity under
the unsteered model, distinct-2) and side effects (KL on neutral prompts) are always measured.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from cli.argtypes import positive
from cli.base import error
from cli.edits import read_prompts
from cli.loading import load

RECIPE_LAYER = -1  # the layer column of a recipe sweep: the recipe's own sites


def add_parser(sub) -> None:
    e = sub.add_parser("eval", help="sweep layers × strengths of a steering recipe or method and recommend one",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")
    family = e.add_mutually_exclusive_group(required=True)
    family.add_argument("--recipe", metavar="FILE", help="a recipe; its strength is swept")
    family.add_argument("--contrast", nargs=2, metavar=("POS.txt", "NEG.txt"),
                        help="ActAdd: one text per line on each side; the direction is swept over --layers")
    e.add_argument("--site", default="hook_resid_pre", help="--contrast: the per-layer site (default hook_resid_pre)")
    e.add_argument("--layers", default=None, help="--contrast: layers, e.g. 2-10 or 3,6,9 (default: every third)")
    e.add_argument("--strengths", required=True, metavar="S,S,...", help="strengths to try, e.g. 0,2,4,8")
    e.add_argument("--effect", required=True, metavar="KIND:ARG",
                   help="language:CODE, token:TEXT (mind the leading space) or mention:WORD,WORD")
    e.add_argument("--prompts", default=None, metavar="FILE",
                   help="prompts, one per line (default: the 16 held-out neutral English prompts)")
    e.add_argument("--max-new-tokens", type=positive, default=32, metavar="N")
    e.add_argument("--max-ppl-ratio", type=float, default=1.5, metavar="R",
                   help="bound on perplexity (× the matched reference for language:, else × unsteered; default 1.5)")
    e.add_argument("--max-kl", type=float, default=1.0, metavar="NATS",
                   help="bound on the KL side effect on neutral prompts (default 1.0)")
    e.add_argument("--min-distinct2", type=float, default=0.7, metavar="D", help="floor on distinct-2 (default 0.7)")
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


def _effect(spec: str, model):
    """(scorer, the matched reference's prompts or None)."""
    from steering.evaluate import LanguageShare, MentionRate, TokenProbability
    from steering.neutral_prompts import NEUTRAL

    kind, sep, arg = spec.partition(":")
    if not sep or not arg:
        raise error(f"--effect {spec!r}: use language:CODE, token:TEXT or mention:WORD,WORD")
    if kind == "language":
        return LanguageShare(arg), NEUTRAL.get(arg)
    if kind == "token":
        ids = model.tokenizer(arg, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise error(f"--effect token:{arg!r} is {len(ids)} tokens in this model; give one token")
        return TokenProbability(ids, name=f"p({arg!r})"), None
    if kind == "mention":
        return MentionRate([w for w in arg.split(",") if w.strip()]), None
    raise error(f"--effect {spec!r}: the kind is language, token or mention")


def _family(args, model):
    """(family, layers)."""
    import interp
    from interp.edits import with_strength
    from interp.recipes import load_recipe

    if args.recipe:
        edits = load_recipe(args.recipe, model)
        return (lambda layer, s: [with_strength(e, s) for e in edits]), [RECIPE_LAYER]
    from steering.actadd import contrast_direction

    pos, neg = read_prompts(args.contrast[0], "--contrast positive"), read_prompts(args.contrast[1], "--contrast negative")
    n = model.adapter.n_layers
    layers = model.adapter.parse_layers(args.layers) if args.layers else list(range(1, n, 3))
    directions = {layer: contrast_direction(model, pos, neg, f"blocks.{layer}.{args.site}") for layer in layers}
    return (lambda layer, s: [interp.Add(directions[layer].site, directions[layer].vector, s)]), layers


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
    from steering.evaluate import Distinct2, NeutralKL, Perplexity, sweep
    from steering.neutral_prompts import NEUTRAL

    strengths = _numbers(args.strengths)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "table.md").exists())):
        raise error(f"{out} exists and is not an interp eval folder; choose another --out")
    prompts = read_prompts(args.prompts, "--prompts") if args.prompts else NEUTRAL["en"]
    model = load(args)
    effect, matched = _effect(args.effect, model)
    family, layers = _family(args, model)
    neutral = [p for p in NEUTRAL["en"] if p not in prompts][:8] or NEUTRAL["en"][:8]
    scorers = [effect, Perplexity(), Distinct2(), NeutralKL(neutral)]
    generation = {"max_new_tokens": args.max_new_tokens}
    reference = None
    if matched is not None and not args.prompts:
        reference = interp.generate(model, matched, (), max_new_tokens=args.max_new_tokens, repetition_penalty=1.3)
    result = sweep(model, family, prompts, layers, strengths, scorers, reference_texts=reference,
                   generation=generation, progress=not args.quiet)
    bounds, floors = {"ppl": args.max_ppl_ratio, "KL neutral": args.max_kl}, {"distinct-2": args.min_distinct2}
    if reference is None:  # no matched reference: perplexity bounded as a ratio to the unsteered model's
        base = [s for s in result.settings if s.strength == 0]
        result.reference["ppl"] = base[0].mean("ppl") if base else float("nan")
    best = result.recommend(effect.name, bounds, floors)
    if best is not None and best.strength == 0:
        best = None  # only the unsteered model keeps the bounds
    text = _report(result, effect.name, layers, best, {**bounds, **floors}, args)
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
        (tmp / "eval.json").write_text(json.dumps({"recommended": None if best is None else
                                                   {"layer": best.layer, "strength": best.strength},
                                                   "bounds": bounds, "floors": floors, "rows": rows}, indent=1),
                                        encoding="utf-8")
    print(text)
    print(f"wrote {out}")
    return 0


def _report(result, effect: str, layers: list[int], best, bounds: dict, args) -> str:
    lines = [f"# interp eval: {args.effect} on {args.model}", "", result.markdown(), "",
             "| layer | slope per unit strength | 95 % interval | consistency | R² |", "|---|---|---|---|---|"]
    for layer in layers:
        if len({s.strength for s in result.settings if s.layer == layer}) >= 2:
            st = result.steerability(effect, layer)
            name = "recipe" if layer == RECIPE_LAYER else str(layer)
            lines.append(f"| {name} | {st.slope:.4g} | [{st.ci[0]:.3g}, {st.ci[1]:.3g}] | {st.consistency:.2f} | "
                         f"{st.r2:.2f} |")
    front = result.pareto(effect, ["ppl", "KL neutral"])
    lines += ["", "Pareto front (effect vs perplexity and KL): " +
              ", ".join(f"({'recipe' if s.layer == RECIPE_LAYER else s.layer}, {s.strength:g})" for s in front)]
    limits = f"perplexity ≤ {bounds['ppl']:g} ×, KL ≤ {bounds['KL neutral']:g}, distinct-2 ≥ {bounds['distinct-2']:g}"
    if best is None:
        lines.append(f"No setting keeps {limits}; nothing recommended.")
    else:
        where = "the recipe" if best.layer == RECIPE_LAYER else f"layer {best.layer}"
        lines.append(f"Recommended: {where} at strength {best.strength:g} ({effect} {result.value(best, effect):.3g}; "
                     f"within {limits}); recommended.safetensors holds it.")
    return "\n".join(lines) + "\n"
