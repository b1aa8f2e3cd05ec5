"""`interp analyze --probe milan`: natural-language descriptions of neurons (MILAN, METHODS.md §F).

Writes an atlas folder: per site `threshold` [width] and the top-k exemplar lists `topk.values`,
`topk.doc`, `topk.pos` [width, k]; the referenced documents; atlas.json's params hold the settings
and every description (PMI choice, plain argmax, PMI score); milan.json keeps each neuron's
candidates with their log p(d|E) and log p(d); report.html shows descriptions beside the
highlighted exemplars. Describing checkpoints to `.<out>.milan-checkpoint.json` beside the
folder after every 16 neurons; `--resume` continues from it.
"""

from __future__ import annotations

import argparse
import html
import json
import random
from pathlib import Path

from interp.errors import InterpError
from cli.argtypes import finite, positive
from cli.loading import load


def add_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--units", default="all", metavar="all|N|i,j,…",
                       help="neurons to describe per site: all (default), N random ones (seeded), or a list")
    group.add_argument("--describer", default="trained", metavar="trained|lm|MODEL|FILE.safetensors",
                       help="captioner and prior: trained = MILAN's learned captioner, trained on synthetic annotated "
                            "neurons and cached (default; ~2 min the first time per tokenizer); lm = the analysed "
                            "model prompted with the exemplars; MODEL = another causal LM prompted; FILE = a saved "
                            "captioner")
    group.add_argument("--lam", type=finite, default=0.2, help="λ of the PMI, log p(d|E) − λ log p(d) (default 0.2)")
    group.add_argument("--beam", type=positive, default=50, help="beam width for candidates (default 50)")
    group.add_argument("--max-tokens", type=positive, default=15, help="longest description in tokens (default 15)")
    group.add_argument("--pmi-mode", default="rerank", choices=["rerank", "per_step"],
                       help="rerank the beam by PMI (default), or subtract λ log p(token) at every beam step")
    group.add_argument("--quantile", type=finite, default=0.99, help="per-neuron highlight threshold (default 0.99)")
    group.add_argument("--search", metavar="QUERY",
                       help="auditing: also print the described neurons that QUERY describes best (its PMI)")


def _check(args) -> None:
    if not 0.0 <= args.lam <= 10.0:
        raise InterpError(f"--lam {args.lam}: expected a value in [0, 10]")
    if args.beam < 1 or args.max_tokens < 1:
        raise InterpError("--beam and --max-tokens must be at least 1")
    if not 0.0 < args.quantile < 1.0:
        raise InterpError(f"--quantile {args.quantile}: expected a value in (0, 1)")
    if args.search is not None and not args.search.strip():
        raise InterpError("--search needs a non-empty query")
    _parse_units(args.units, 10**9, 0)


def _parse_units(spec: str, width: int, seed: int) -> list[int]:
    spec = spec.strip()
    if spec == "all":
        return list(range(width))
    try:
        if "," not in spec:
            n = int(spec)
            if n < 1:
                raise ValueError
            return sorted(random.Random(seed).sample(range(width), min(n, width)))
        units = [int(u) for u in spec.split(",") if u.strip()]
    except ValueError:
        raise InterpError(f"--units {spec!r}: expected all, a positive count, or a comma list of neuron numbers")
    bad = [u for u in units if not 0 <= u < width]
    if bad:
        raise InterpError(f"--units: {bad[:5]} outside 0..{width - 1}")
    return units


def milan_settings(args):
    """The MilanSettings that the parsed options name (what a checkpoint records)."""
    from probes.milan import MilanSettings

    return MilanSettings(k=args.top_k or 15, quantile=args.quantile, lam=args.lam, beam=args.beam,
                         max_tokens=args.max_tokens, mode=args.pmi_mode, batch_size=args.batch_size,
                         max_length=min(args.max_length, 128))


def analyze_command(args, out: Path) -> int:
    import interp
    from atlases import Atlas
    from interp.corpora import load_corpus
    from probes.milan import audit, describe_neurons, exemplars_for, index_exemplars
    from probes.milan.probe import read_checkpoint
    from cli.runs import checkpoint_for
    from interp.distributed import world

    _check(args)
    corpus = load_corpus(args.corpus or "demo", **({"limit": args.limit} if args.limit else {}))
    checkpoint = out.parent / f".{out.name}.milan-checkpoint.json"
    if checkpoint.exists() and not args.resume:
        checkpoint.unlink()
    settings = milan_settings(args)
    read_checkpoint(checkpoint, settings)  # a resume with other settings is refused before any model work
    model = load(args)
    sites = model.adapter.expand(args.sites, args.layers)
    index = index_exemplars(model, corpus, sites, settings, progress=not args.quiet and world()[0] == 0,
                            checkpoint=checkpoint_for(args, out))
    if world()[0] != 0:
        return 0  # rank 0 holds the merged exemplars and describes the neurons
    units = {s: _parse_units(args.units, index.thresholds[s].numel(), getattr(args, 'seed', 0)) for s in sites}
    describer, describer_name = _describer(args, model, settings)
    described = describe_neurons(model, index, units, describer, settings, checkpoint=checkpoint,
                                 progress=not args.quiet)
    tensors, used_docs = {}, set()
    for s in sites:
        tensors[f"{s}/threshold"] = index.thresholds[s]
        for name in ("values", "doc", "pos"):
            tensors[f"{s}/topk.{name}"] = index.topk[s][name]
        used_docs |= {int(d) for u in units[s] for d in index.topk[s]["doc"][u].tolist() if d >= 0}
    docs = [{"index": i, "text": index.docs[i].text, "group": index.docs[i].group, "id": index.docs[i].id}
            for i in sorted(used_docs)]
    short = {s: {str(u): {"text": d.text, "argmax": d.argmax, "pmi": d.pmi} for u, d in ds.items()}
             for s, ds in described.items()}
    full = {s: {str(u): d.to_json() for u, d in ds.items()} for s, ds in described.items()}
    params = {"settings": vars(settings), "corpus": args.corpus or "demo",
              "describer": describer_name, "descriptions": short}
    atlas = Atlas(model=model.name, revision=model.revision, sites=sites, method="milan", tensors=tensors,
                  params=params, documents=docs)
    # exemplars once: the report shows them for the first 200 neurons per site, --search scores all described
    shown = {s: exemplars_for(model, index, s, list(ds) if args.search else list(ds)[:200], settings)
             for s, ds in described.items()}
    report = _report(model.name, described, {s: nes[:200] for s, nes in shown.items()})
    atlas.save(out, extra_files={"milan.json": json.dumps(full, ensure_ascii=False), "report.html": report})
    checkpoint.unlink(missing_ok=True)
    n = sum(len(v) for v in described.values())
    print(f"wrote {out}/atlas.json (descriptions of {n} neurons at {len(sites)} sites), milan.json, report.html")
    if args.search:  # auditing: the query's PMI as a description of each described neuron
        neurons = [ne for nes in shown.values() for ne in nes]
        print(f"neurons best described as {args.search!r} (PMI):")
        for h in audit(describer, neurons, args.search, lam=settings.lam, top=10):
            print(f"{h.similarity:8.2f}  {h.site}:{h.unit}  ({described[h.site][h.unit].text})")
    return 0


def _describer(args, model, settings):
    """(the Describer that --describer names, its name for the atlas)."""
    from probes.milan.annotations import AnnotationSettings
    from probes.milan.captioner import TrainedDescriber, load_captioner, trained_captioner
    from probes.milan.describe import LMDescriber

    spec = args.describer
    if spec == "trained":
        cap = trained_captioner(model.tokenizer, AnnotationSettings(window=settings.window),
                                progress=not args.quiet)
        return TrainedDescriber(cap), "trained captioner"
    if spec.endswith(".safetensors"):
        if not Path(spec).is_file():
            raise InterpError(f"--describer {spec}: no such captioner file")
        return TrainedDescriber(load_captioner(spec)), spec
    other = model if spec == "lm" else load(args, spec)
    return LMDescriber(other), f"prompted LM {other.name}"


def _report(model: str, described: dict, exemplars: dict) -> str:
    rows = []
    for site, ds in described.items():
        ex = {ne.unit: ne for ne in exemplars.get(site, [])}
        for u, d in ds.items():
            shown = "".join(f"<div>{_marked(t)}</div>" for t in (ex[u].texts()[:3] if u in ex else []))
            rows.append(f"<tr><td>{html.escape(site)}</td><td>{u}</td><td><b>{html.escape(d.text)}</b></td>"
                        f"<td>{html.escape(d.argmax)}</td><td>{d.pmi:.2f}</td><td class=ex>{shown}</td></tr>")
    return (f"<!doctype html><meta charset=utf-8><title>MILAN descriptions · {html.escape(model)}</title>"
            "<style>body{font:14px system-ui;margin:2em}td{border-bottom:1px solid #ddd;padding:4px;"
            "vertical-align:top}mark{background:#fd6}.ex{font-size:12px;color:#333}</style>"
            f"<h1>MILAN descriptions of {html.escape(model)}</h1>"
            "<p>Description: argmax of log p(d|E) − λ log p(d) over the beam's candidates; argmax: the plain "
            "captioner's choice (λ = 0). Exemplars: the neuron's top documents, tokens above its 0.99-quantile "
            "marked.</p><table><tr><th>site</th><th>neuron</th><th>description</th><th>argmax</th><th>PMI</th>"
            f"<th>exemplars</th></tr>{''.join(rows)}</table>")


def _marked(text: str) -> str:
    return html.escape(text).replace("[[", "<mark>").replace("]]", "</mark>")
