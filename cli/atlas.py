"""`interp atlas query|compare|merge`: which neurons mean a token, what a neuron means, how two models'
lm-head atlases agree, and one neuron-card index from many atlases."""

from __future__ import annotations

import re

from cli.argtypes import count, positive
from cli.base import Parser, error


def add_parser(sub) -> None:
    at = sub.add_parser("atlas", help="query or compare atlases", description="Query or compare atlas folders.")
    atsub = at.add_subparsers(dest="atlas_command", required=True, parser_class=Parser)
    q = atsub.add_parser("query", help="neurons for a token, or tokens for a neuron (lm-head atlases)",
                         description="Which neurons mean a token (--token ' dog'), or what a neuron means "
                                     "(--neuron 12:345).")
    q.add_argument("folder", help="an lm-head atlas folder (interp analyze --probe lm-head)")
    q.add_argument("--token", help="a single token, with its leading space if it has one, e.g. ' dog'")
    q.add_argument("--neuron", metavar="LAYER:NEURON", help="e.g. 12:345")
    q.add_argument("--direction", default="write", help="write, up or gate (default write)")
    q.add_argument("--k", type=positive, default=20, help="how many neurons / tokens to list (default 20)")
    c = atsub.add_parser("compare", help="share of neurons keeping their top token between two lm-head atlases",
                         description="The share of neurons whose top token agrees between two models' "
                                     "lm-head atlases (same vocabulary).")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--direction", default="up", help="write, up or gate (default up, as in the paper)")
    c.add_argument("--show", type=count, default=20, help="moved neurons to list (default 20)")
    m = atsub.add_parser("merge", help="join atlases of one model into a neuron-card index",
                         description="Join the atlases of one model (stats, lm-head, language-neurons, hftp, milan, "
                                     "foxp2, shared-neurons, brain-axes adapters) into the neuron-card index OUT "
                                     "(made if absent; merging an atlas again replaces only its analysis's fields). "
                                     "Written atomically.")
    m.add_argument("out", help="the index folder")
    m.add_argument("atlases", nargs="+", help="atlas folders")
    m.add_argument("--model", default=None, help="brain-axes atlases only: the model their adapters were fitted on, "
                                                 "for each neuron's loading (default: loaded by the adapters' name)")
    s = atsub.add_parser("cards", help="write a neuron-card index as a static site (opens from disk, no server)",
                         description="Write the neuron-card index INDEX (interp atlas merge) as a self-contained static "
                                     "site: a search box, a layer strip, one card per neuron. Data loads per layer on "
                                     "demand. With the model (default: the index's), exemplars are highlighted at "
                                     "their token and cards link neighbours by write direction.")
    s.add_argument("index", help="a neuron-card index folder")
    s.add_argument("--out", required=True, help="the site folder to write (replaced atomically)")
    s.add_argument("--model", default=None, help="the model to tokenize exemplars and find neighbours with "
                                                 "(default: the index's model)")
    s.add_argument("--no-model", action="store_true", help="do not load a model: exemplars as plain text, "
                                                            "no neighbours")


def parse_neuron(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*L?(\d+)\s*:\s*(\d+)\s*", text)
    if m is None:
        raise error(f"bad --neuron {text!r}: use LAYER:NEURON, e.g. 12:345")
    return int(m[1]), int(m[2])


def command(args) -> int:
    from atlases import compare, load_atlas

    if args.atlas_command == "merge":
        from atlases.cards import CardIndex, merge_atlases

        index = CardIndex.load(merge_atlases(args.out, args.atlases, model=_model_for_adapters(args))).atlas
        kinds = ", ".join(sorted(index.params["sources"]))
        print(f"# {args.out}: neuron cards of {index.model}, {len(index.sites)} layers, from {kinds}")
        return 0

    if args.atlas_command == "cards":
        return _cards(args)
    if args.atlas_command == "compare":
        a, b = load_atlas(args.a), load_atlas(args.b)
        agreement = compare(a, b, direction=args.direction)
        print(f"# {a.model} vs {b.model}, direction {args.direction}: {agreement.percent:.1f}% of neurons keep "
              f"their top token ({len(agreement.moved)} moved)")
        for layer, share in agreement.per_layer.items():
            print(f"layer {layer}\t{100 * share:.1f}%")
        for layer, n, ta, tb in agreement.moved[: args.show]:
            print(f"moved L{layer}:{n}\t{ta!r} -> {tb!r}")
        return 0
    atlas = load_atlas(args.folder)
    if (args.token is None) == (args.neuron is None):
        raise error("give exactly one of --token TEXT or --neuron LAYER:NEURON")
    if args.token is not None:
        hits = atlas.neurons_for(args.token, k=args.k, direction=args.direction)
        print(f"# neurons of {atlas.model} that mean {args.token!r} ({args.direction} direction), best first")
        print("layer\tneuron\tp(token)\trank\ttop tokens")
        for h in hits:
            top = " ".join(repr(t.token) for t in atlas.tokens_for(h.layer, h.neuron, direction=args.direction, k=5))
            print(f"{h.layer}\t{h.neuron}\t{h.prob:.4g}\t{h.rank}\t{top}")
        return 0
    layer, neuron = parse_neuron(args.neuron)
    print(f"# {atlas.model} L{layer}:{neuron} ({args.direction} direction)")
    print("token\tp\tlogit")
    for t in atlas.tokens_for(layer, neuron, direction=args.direction, k=args.k):
        print(f"{t.token!r}\t{t.prob:.4g}\t{t.logit:.3f}")
    return 0



def _model_for_adapters(args):
    """The model a merge needs when one of its atlases is brain-axes (adapters on the residual stream), else None."""
    import json
    from pathlib import Path

    import interp

    for folder in args.atlases:
        try:
            header = json.loads((Path(folder) / "atlas.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # load_atlas says what is wrong with it
        if header.get("method") == "brain-axes" and "adapters" in header.get("params", {}):
            return interp.load_model(args.model or header["params"]["adapters"]["model"])
    return None


def _cards(args) -> int:
    import time

    import interp
    from atlases.cards import CardIndex
    from atlases.cards_site import write_site

    if args.no_model and args.model:
        raise error("give --model or --no-model, not both")
    start = time.perf_counter()
    index = CardIndex.load(args.index)
    model = None if args.no_model else interp.load_model(args.model or index.atlas.model)
    site = write_site(index, args.out, model=model)
    print(f"# {site.folder}: {site.cards} neuron cards of {index.atlas.model} in {site.files} files, "
          f"{site.bytes / 2**20:.1f} MB, {time.perf_counter() - start:.1f} s; open {site.folder / 'index.html'}")
    return 0
