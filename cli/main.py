"""`interp`: models, sites and analysis from the command line.

Bad input (unknown model, site, empty corpus, unreadable file …) prints one
line to stderr and exits with code 2; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _cmd_models(args) -> int:
    from interp.models import DEFAULT_MODEL, OFFLINE_MODELS, _package_dir

    for name, entry in sorted(OFFLINE_MODELS.items()):
        have = _package_dir(entry.package.replace("-", "_")) is not None
        mark = "installed" if have else f"not installed ({entry.install})"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}\t{mark}\t{entry.licence}\t{entry.notes}")
    print("also: any local Hugging Face folder, a .gguf file, or a hub id where the hub is reachable")
    return 0


def _cmd_sites(args) -> int:
    import interp

    model = interp.load_model(args.model)
    a = model.adapter
    print(f"# {model.name}: family {a.family.name}, {a.n_layers} layers, d_model {a.d_model}, "
          f"d_mlp {a.d_mlp}, {a.n_heads} heads × {a.d_head}")
    for site in model.sites():
        print(site)
    return 0


def _cmd_analyze(args) -> int:
    import interp
    from atlases import Atlas
    from atlases.report import render_report
    from interp.corpora import load_corpus
    from interp.exemplars import token_context
    from probes.stats import activation_statistics

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "atlas.json").exists())):
        raise interp.InterpError(f"{out} exists and is not an atlas folder; choose another --out")
    if args.probe != "stats":
        raise interp.InterpError(f"unknown probe {args.probe!r}; available: stats")
    corpus = load_corpus(args.corpus, **({"limit": args.limit} if args.limit else {}))
    model = interp.load_model(args.model, dtype=args.dtype)
    sites = model.adapter.expand(args.sites, args.layers)
    result = activation_statistics(model, corpus, sites, top_k=args.top_k, batch_size=args.batch_size,
                                   max_length=args.max_length, progress=not args.quiet)
    atlas = Atlas(model=model.name, revision=model.revision, sites=result.sites, method="activation-statistics",
                  tensors=result.tensors, params={**result.params, "corpus": args.corpus}, documents=result.documents)
    texts = {d["index"]: d["text"] for d in result.documents}
    ctx = lambda d, p: token_context(model.tokenizer, texts[d], p, max_length=args.max_length)  # noqa: E731
    atlas.save(out, extra_files={"report.html": render_report(atlas, ctx)})
    print(f"wrote {out}/atlas.json, tensors.safetensors and report.html "
          f"({len(result.sites)} sites, {result.params['n_tokens']} tokens)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="interp", description="Read and steer the neurons of language models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("models", help="list the models available offline",
                   description="List offline model names and whether their weights are installed.")

    s = sub.add_parser("sites", help="list a model's site names", description="List every site of a model.")
    s.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")

    a = sub.add_parser("analyze", help="run an analysis over a corpus and write an atlas",
                       description="Stream a corpus through a model and write an atlas folder "
                                   "(atlas.json, tensors.safetensors, report.html).")
    a.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")
    a.add_argument("--corpus", required=True,
                   help="'demo', 'bible:en,fr[:N]', or a .txt (blank-line separated) / .jsonl file")
    a.add_argument("--out", required=True, help="atlas folder to write (replaced atomically)")
    a.add_argument("--probe", default="stats", help="analysis to run (default: stats)")
    a.add_argument("--sites", default="mlp.hook_post", help="comma list of site names or per-layer names")
    a.add_argument("--layers", default=None, help="layers for per-layer names, e.g. 0-5,10 (default: all)")
    a.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"],
                   help="compute dtype (bf16 statistics agree with fp32 to <0.5%%)")
    a.add_argument("--batch-size", type=int, default=8)
    a.add_argument("--max-length", type=int, default=256, help="tokens per document (truncated)")
    a.add_argument("--top-k", type=int, default=16, help="exemplars kept per unit")
    a.add_argument("--limit", type=int, default=None, help="use only the first N documents")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


COMMANDS = {"models": _cmd_models, "sites": _cmd_sites, "analyze": _cmd_analyze}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from interp.errors import InterpError

    try:
        return COMMANDS[args.command](args)
    except InterpError as exc:
        print(f"interp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interp: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
