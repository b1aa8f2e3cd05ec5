"""`interp analyze --probe brain-axes --meg DIR --words words.tsv` and `interp steer brain-axis`.

analyze: the MEG atlas (PLV states → word atlas → ICA axes, `atlases.brain`) from every raw
recording under --meg (FIF files or a BIDS dataset), then the model's adapters from
word-type hidden states to the recovered axes (`probes.brain_axes`) at --layers (default
every fifth layer and the last). One atlas folder: the brain tensors ("meg/…"), the
adapters ("blocks.{l}.hook_resid_post/adapter.…"), table.txt and report.html.

steer: adds strength × (norm fraction × the layer's mean residual norm) × the axis's unit
direction at `blocks.{layer}.hook_resid_post` (`steering.axes`); --raw-strength,
--public-code-direction, --adapter-layer last and --paper give the paper's choices
(`steering.axes.AxisSteerSettings`), recorded in the printed notes as paper_mode.
"""

from __future__ import annotations

import argparse
import html
import json
import math
from pathlib import Path

from interp.errors import InterpError
from cli import paper
from cli.argtypes import count, finite
from cli.loading import load


def add_options(group: argparse._ArgumentGroup, *, steer: bool) -> None:
    if steer:
        group.add_argument("--atlas", metavar="DIR", help="a brain-axes atlas (interp analyze --probe brain-axes)")
        group.add_argument("--axis", type=count, metavar="K", help="brain-axis: the axis to steer along (see table.txt)")
        group.add_argument("--strength", default="1", metavar="S",
                           help="brain-axis: how far to steer, in units of --norm-fraction (default 1)")
        group.add_argument("--layer", type=count, metavar="L",
                           help="brain-axis: the adapter layer to steer at (default: its best held-out R² for --axis)")
        group.add_argument("--norm-fraction", type=finite, default=0.25, metavar="F",
                           help="brain-axis: strength 1 adds F × the layer's mean residual norm (default 0.25)")
        group.add_argument("--raw-strength", action="store_true",
                           help="brain-axis: (one of --paper's choices) --strength S adds S × the unit direction, "
                                "no residual-norm unit (the paper's s ∈ {-2..2})")
        group.add_argument("--public-code-direction", action="store_true",
                           help="brain-axis: (one of --paper's choices) the direction coef × scale as the public "
                                "code has it; default coef / scale, the direction that raises the axis score")
        group.add_argument("--adapter-layer", choices=["same", "last"], default=None,
                           help="brain-axis: the adapter whose direction is added: the steering layer's own "
                                "(same, default) or the last layer's (last: the paper's; needs it in the atlas)")
        return
    group.add_argument("--meg", metavar="DIR", help="raw MEG: a .fif file, a folder of them, or a BIDS dataset")
    group.add_argument("--words", metavar="TSV", help="word onsets: columns onset, word [, recording, features…]")
    group.add_argument("--lexicon", action="append", default=[], metavar="NAME=CSV",
                       help="an extra lexicon to validate axes against (word,value per row; repeatable)")
    group.add_argument("--brain-permutations", type=count, default=100, metavar="N",
                       help="timeline shifts for the recovery threshold (default 100)")
    group.add_argument("--embedding-change", action="store_true",
                       help="(one of --paper's choices) add the built-in word feature 'embedding_change': per "
                            "word, the L2 change of the model's own contextual word embedding from the word "
                            "before (atlases.words.embedding_change; the atlas then depends on --model)")
    group.add_argument("--paper-axes", action="store_true",
                       help="the same as --paper here: the paper's choices: ICA over every PC, window-mean word "
                            "vectors, every word, the embedding-change feature (finds the word features even in "
                            "noise; see README)")


def check_analyze(args) -> None:
    if not args.meg or not args.words:
        raise InterpError("--probe brain-axes needs --meg DIR and --words words.tsv")
    if not Path(args.meg).exists():
        raise InterpError(f"--meg {args.meg} does not exist")
    if not Path(args.words).is_file():
        raise InterpError(f"--words {args.words} does not exist")
    if args.brain_permutations < 10:
        raise InterpError("--brain-permutations must be at least 10")
    args._lexica = {}
    for spec in args.lexicon:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise InterpError(f"bad --lexicon {spec!r}: use NAME=FILE, e.g. concreteness=brysbaert.csv")
        args._lexica[name] = path


def analyze_command(args, out: Path) -> int:
    from dataclasses import replace

    import numpy as np

    import interp
    from atlases.brain import BrainAtlasSettings, build_brain_atlas, find_recordings, read_lexicon, read_raw
    from atlases.brain_plots import axes_png
    from atlases.words import read_words
    from probes.brain_axes import adapter_params, adapter_tensors, fit_adapters, word_type_states

    check_analyze(args)
    words = read_words(args.words)
    lexica = {name: read_lexicon(path) for name, path in args._lexica.items()}
    paths = find_recordings(args.meg)
    names = [p.name.removesuffix(".fif") for p in paths]
    if None not in words and not set(names) <= set(words):
        missing = sorted(set(names) - set(words))
        raise InterpError(f"--words has no rows for recording(s) {', '.join(missing[:3])} (column 'recording')")
    raws = [read_raw(p) for p in paths]
    settings = BrainAtlasSettings(n_perm=args.brain_permutations)
    if args.paper_axes or args.paper:
        settings = settings.as_paper()
    if args.embedding_change:
        settings = replace(settings, embedding_change=True)
    model = None
    if settings.embedding_change:
        from atlases.words import EMBEDDING_CHANGE, add_embedding_change

        model = load(args)
        missing = {rec: w for rec, w in words.items() if EMBEDDING_CHANGE not in w.user_names}
        words = {**words, **add_embedding_change(model, missing)}  # a column of the TSV's own is kept
    atlas = build_brain_atlas(raws, words, settings, names=names, lexica=lexica, progress=not args.quiet)
    text = atlas.table()
    disk = atlas.to_atlas()
    disk.params["paper_mode"] = settings.provenance()
    if settings.embedding_change:
        disk.params["embedding_change_model"] = model.name  # the word feature came from this model
    axes = [int(k) for k in np.flatnonzero(atlas.recovered)]
    if axes:
        model = model or load(args)
        n = model.adapter.n_layers
        layers = sorted(set(model.adapter.parse_layers(args.layers) if args.layers else [*range(0, n, 5), n - 1]))
        stream = [w for ws in words.values() for w in ws.words]
        report = fit_adapters(word_type_states(model, stream, atlas.words, layers), atlas.scores, axes=axes)
        disk.tensors.update(adapter_tensors(report))
        disk.params["adapters"] = adapter_params(report, model.name)
        disk.sites = ["meg", *(f"blocks.{l}.hook_resid_post" for l in layers)]
        text += "\n\nadapters (held-out R² per recovered axis; shuffled-label baseline)\n" + report.table()
    else:
        text += "\n\nno axis was recovered, so no adapters were fitted"
    report_html = (f"<!doctype html><html><head><meta charset='utf-8'><title>interp brain axes</title></head>"
                   f"<body><h1>Brain-grounded axes</h1><img src='axes.png'><pre>{html.escape(text)}</pre>"
                   f"</body></html>")
    disk.save(out, extra_files={"report.html": report_html, "table.txt": text + "\n"},
              binary_files={"axes.png": axes_png(atlas)})
    print(text)
    print(f"wrote {out}: {len(axes)} recovered axes over {len(atlas.words)} words")
    return 0


def check_steer(args) -> None:
    if args.axis is None:
        raise InterpError("interp steer brain-axis needs --axis K and --atlas DIR (from interp analyze --probe brain-axes)")
    if not args.atlas:
        raise InterpError("interp steer brain-axis needs --atlas DIR (from interp analyze --probe brain-axes)")
    try:
        args._strength = 1.0 if args.strength == "auto" else float(args.strength)
    except ValueError:
        raise InterpError(f"--strength {args.strength!r} must be a number") from None
    if not math.isfinite(args._strength) or not math.isfinite(args.norm_fraction) or args.norm_fraction <= 0:
        raise InterpError("--strength must be finite and --norm-fraction positive")


def steer_edits(args, model, prompts, notes: list[str]) -> list:
    """interp steer brain-axis: the Add edit along the axis's adapter direction (`steering.axes.atlas_axis_edits`)."""
    from atlases import load_atlas
    from steering.axes import atlas_axis_edits

    atlas = load_atlas(args.atlas)
    settings = steer_settings(args)
    try:  # atlas_axis_edits checks the atlas's kind, model and axis
        edits, note = atlas_axis_edits(model, atlas, args.axis, args._strength, prompts, layer=args.layer,
                                       settings=settings)
    except InterpError as exc:
        raise InterpError(f"--atlas {args.atlas}: {exc}") from None
    notes.append(note)
    notes.append("paper_mode: " + json.dumps(settings.provenance()))
    return edits


def steer_settings(args):
    """`steering.axes.AxisSteerSettings` from the options (--paper first, the explicit switches on top)."""
    from dataclasses import replace

    from steering.axes import AxisSteerSettings

    settings = paper.apply(AxisSteerSettings(norm_fraction=args.norm_fraction), args)
    changes = {k: True for k, flag in (("raw_strength", args.raw_strength),
                                       ("public_code", args.public_code_direction)) if flag}
    if args.adapter_layer is not None:
        changes["adapter"] = args.adapter_layer
    return replace(settings, **changes)
