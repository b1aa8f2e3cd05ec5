"""`interp`: models, sites, analysis and steering from the command line.

Bad input (unknown model, site, empty corpus, unreadable file …) prints one
line to stderr and exits with code 2; nothing is written.

Each command builds its own parser: `cli.info` (models, sites), `cli.analyze` (and one module
per probe), `cli.atlas`, `cli.steer` (and one module per steering method), `cli.eval`, `cli.recipe`, `cli.serve`.
"""

from __future__ import annotations

import argparse
import sys

from cli import analyze, atlas, eval as eval_cli, info, recipe, serve, steer
from cli.analyze import PROBES
from cli.base import Parser
from cli.steer import STEER_METHODS

__all__ = ["PROBES", "STEER_METHODS", "build_parser", "main"]

COMMANDS = {"models": info.models_command, "sites": info.sites_command, "analyze": analyze.command,
            "atlas": atlas.command, "steer": steer.command, "serve": serve.command, "eval": eval_cli.command,
            "recipe": recipe.command}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="interp", description="Read and steer the neurons of language models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    info.add_parsers(sub)
    analyze.add_parser(sub)
    atlas.add_parser(sub)
    steer.add_parser(sub)
    eval_cli.add_parser(sub)
    recipe.add_parser(sub)
    serve.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or bad arguments (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    from interp.errors import InterpError

    args.argv = list(sys.argv[1:] if argv is None else argv)  # for --launcher, which re-runs the command
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
