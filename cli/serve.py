"""`interp serve`: a steered model behind an OpenAI-compatible API (see serve/ and the README)."""

from __future__ import annotations

from pathlib import Path

from cli.base import error


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model with per-request steering over the OpenAI API",
                       description="Serve MODEL over an OpenAI-compatible HTTP API (completions, chat completions), "
                                   "each request steered by a recipe of its choice (model id MODEL:NAME, or "
                                   "extra_body recipe/recipes/edits).")
    p.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=FILE",
                   help="serve a recipe under NAME (repeatable); requests pick it as MODEL:NAME")
    p.add_argument("--recipe-dir", metavar="DIR", help="where uploaded recipes are kept (and read back at start); "
                                                      "default: ~/.cache/interp/serve/MODEL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, metavar="N", help="prompt + new tokens per request")
    p.add_argument("--max-batch-tokens", type=int, default=1024, metavar="N", help="tokens per engine step")
    p.add_argument("--kv-blocks", type=int, default=256, metavar="N",
                   help="KV cache blocks of 32 tokens (in all, over every running request)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="S",
                   help="on SIGTERM, seconds in-flight requests get to finish before they are cancelled")


def _recipes(specs: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise error(f"bad --recipe {spec!r}: use NAME=FILE, e.g. spanish=spanish.safetensors")
        if name in out:
            raise error(f"--recipe {name} is given twice")
        p = Path(path).expanduser()
        if not p.is_file():
            raise error(f"--recipe {name}: {p} does not exist" if not p.exists() else f"--recipe {name}: {p} is not a file")
        out[name] = p
    return out


def command(args) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise error(f"interp serve needs the serve extra ({exc.name} is missing): pip install 'interp[serve]'") from None
    for flag in ("port", "max_batch_tokens", "kv_blocks"):
        value = getattr(args, flag)
        if value is not None and not (0 < value < (65536 if flag == "port" else 1 << 24)):
            raise error(f"--{flag.replace('_', '-')} {value} is out of range")
    if args.max_model_len is not None and args.max_model_len < 2:
        raise error("--max-model-len must be at least 2")
    recipes = _recipes(args.recipe)
    from cli.loading import load
    from interp.cache import cache_dir
    from serve import app
    from serve.registry import check_name
    from serve.server import run

    for name in recipes:
        check_name(name)
    model = load(args)
    folder = Path(args.recipe_dir).expanduser() if args.recipe_dir else cache_dir() / "serve" / model.name
    api = app(model, recipes, recipe_dir=folder, max_model_len=args.max_model_len,
              engine_options={"max_batch_tokens": args.max_batch_tokens, "num_blocks": args.kv_blocks})
    names = ", ".join(f"{model.name}:{n}" for n in api.state.registry.names()) or "none yet"
    print(f"# serving {model.name} on http://{args.host}:{args.port}/v1 (recipes: {names}; uploads in {folder})",
          flush=True)
    run(api, args.host, args.port, args.shutdown_timeout)
    return 0
