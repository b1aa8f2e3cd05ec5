"""`interp analyze --probe lm-head`: decode every MLP neuron through the unembedding (weights only)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cli.argtypes import count
from cli.base import error
from cli.loading import load


def add_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--directions", default="write,up",
                       help="neuron directions to decode: write (down_proj column), up, gate (read rows); "
                            "default write,up")
    group.add_argument("--no-final-norm", action="store_true",
                       help="do not multiply by the final norm's weight before the unembedding")
    group.add_argument("--unit", action="store_true", help="unit-normalise each direction first")
    group.add_argument("--index-k", type=count, default=0,
                       help="keep, per token, the N neurons giving it the highest probability, for exact "
                            "`atlas query --token` over all neurons (costs about one more map; default 0: queries "
                            "use each neuron's top-k list)")


def options(args):
    from probes.lm_head import LMHeadOptions

    directions = tuple(d.strip() for d in args.directions.split(",") if d.strip())
    return LMHeadOptions(directions=directions, final_norm=not args.no_final_norm, unit=args.unit,
                         k=args.top_k if args.top_k is not None else 10, index_k=args.index_k)


def analyze_command(args, out: Path) -> int:
    from atlases import decoded_vocab, lm_head_atlas
    from atlases.lm_head_report import render_lm_head_report
    from probes.lm_head import lm_head_map

    if args.corpus is not None:
        raise error("--probe lm-head reads weights only; drop --corpus")
    from cli.analyze import compute_dtype

    # bad options fail before the model loads; --dtype sets the products' dtype (the weights stay fp32 for the
    # exact re-ranking)
    opts = dataclasses.replace(options(args), dtype=compute_dtype(args))
    model = load(args, dtype="float32")
    lm_map = lm_head_map(model, model.adapter.parse_layers(args.layers) if args.layers else None, opts, progress=not args.quiet)
    atlas = lm_head_atlas(lm_map, model=model.name, revision=model.revision,
                          vocab=decoded_vocab(model.tokenizer, lm_map.vocab))
    atlas.save(out, extra_files={"report.html": render_lm_head_report(atlas)})
    print(f"wrote {out}/atlas.json, tensors.safetensors, vocab.json and report.html "
          f"({len(lm_map.layers)} layers × {lm_map.d_mlp} neurons, directions {', '.join(opts.directions)})")
    if opts.dtype == "bfloat16":
        redone = {d: int(lm_map.get(d, "recomputed").sum()) for d in opts.directions}
        print("bfloat16 products, each neuron's candidates re-ranked in fp32; decoded again in fp32 where the "
              "candidates could not be shown to hold the fp32 top-k: "
              + ", ".join(f"{d} {n} neuron(s)" for d, n in redone.items()))
    return 0
