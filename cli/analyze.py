"""`interp analyze`: run a probe and write an atlas folder; the parser, the dispatch to each probe's
module, and the stats probe (activation statistics over a corpus)."""

from __future__ import annotations

import os
from pathlib import Path

from cli.argtypes import positive
from cli.base import error
from cli.loading import load

PROBES = ("stats", "lm-head", "language-neurons", "foxp2", "hftp", "brain-axes", "shared-neurons", "milan", "all")


def add_parser(sub) -> None:
    from cli import analyze_all, brain_axes, foxp2, hftp, language, lm_head, milan, paper, runs, shared_neurons
    from cli.loading import add_options as placement_options

    a = sub.add_parser("analyze", help=f"run a probe ({', '.join(PROBES)}) and write an atlas",
                       description="Run a probe and write an atlas folder (atlas.json, tensors.safetensors, "
                                   "report.html): stats streams a corpus through the model; lm-head decodes the "
                                   "weights; language-neurons counts firing per language; foxp2 localises a target "
                                   "language and writes a steering recipe; hftp finds syntax neurons by frequency "
                                   "tagging (and compares them with brain recordings); brain-axes builds an MEG "
                                   "word atlas and fits the model's adapters to its axes; milan describes neurons "
                                   "in words; all runs every analysis that applies and merges them into one "
                                   "neuron-card index.")
    a.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")
    a.add_argument("--corpus", default=None,
                   help="'demo', 'bible:en,fr[:N]', or a .txt (blank-line separated) / .jsonl file "
                        "(needed by --probe stats)")
    a.add_argument("--out", required=True, help="atlas folder to write (replaced atomically); with --probe all, a "
                                                "folder: OUT/index (the card index), OUT/steps/STEP, OUT/logs")
    a.add_argument("--probe", default="stats", choices=PROBES,
                   help="stats: activation statistics over a corpus; lm-head: decode every MLP neuron "
                        "through the unembedding (weights only, no corpus); language-neurons: language-specific, "
                        "-related and -agnostic neurons from per-language firing counts; foxp2: Neural FOXP2 "
                        "localisation, spectra and recipe (--target); hftp: sentence- and phrase-rate neurons; "
                        "brain-axes: MEG word atlas, ICA axes and adapters (--meg, --words); shared-neurons: "
                        "the units a VLM (--model) shares with its LLM (--pair); milan: natural-language "
                        "descriptions of neurons by pointwise mutual information with their exemplars; "
                        + analyze_all.HELP.replace("%", "%%"))
    a.add_argument("--engine", choices=["transformers", "vllm"], default="transformers",
                   help="stats only: transformers (default), or vllm: stream the corpus through vLLM, the reducers "
                        "filled inside its workers (needs vLLM: make install-vllm; --tensor-parallel-size for "
                        "residual sites, --pipeline-parallel-size for any)")
    a.add_argument("--tensor-parallel-size", type=positive, default=1, metavar="N", help="vllm: GPUs per layer")
    a.add_argument("--pipeline-parallel-size", type=positive, default=1, metavar="N", help="vllm: pipeline stages")
    a.add_argument("--sites", default="mlp.hook_post", help="comma list of site names or per-layer names")
    a.add_argument("--layers", default=None, help="layers for per-layer names, e.g. 0-5,10 (default: all)")
    a.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="compute dtype of stats, language-neurons and lm-head; auto (default): bfloat16 where it "
                        "runs natively (a CPU with AVX512-BF16 or AMX, or a GPU), float32 elsewhere, where bfloat16 "
                        "is emulated and ~9x slower (bf16 statistics agree with fp32 to <0.5%%; the lm-head map's "
                        "bf16 products are re-ranked in fp32, so its top-k is the fp32 one)")
    a.add_argument("--batch-size", type=positive, default=8)
    a.add_argument("--max-length", type=positive, default=256, help="tokens per document (truncated)")
    a.add_argument("--top-k", type=positive, default=None,
                   help="exemplars kept per unit (stats, default 16) / top tokens per neuron (lm-head, default 10)")
    a.add_argument("--limit", type=positive, default=None, help="use only the first N documents")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    paper.add_option(a)
    runs.add_options(a.add_argument_group("long runs (stats, language-neurons, milan): processes, checkpoints, resume"))
    placement_options(a.add_argument_group("large models"))
    lm_head.add_options(a.add_argument_group("lm-head options"))
    language.add_options(a.add_argument_group("language-neurons options"))
    foxp2.add_options(a.add_argument_group("foxp2 options"), steer=False)
    hftp.add_options(a.add_argument_group("hftp options (--sites selects the neurons, default mlp.hook_post)"))
    brain_axes.add_options(a.add_argument_group("brain-axes options (--layers picks the adapter layers)"), steer=False)
    shared_neurons.add_options(a.add_argument_group("shared-neurons options"), steer=False)
    milan.add_options(a.add_argument_group("milan options (--sites/--layers pick the neurons, --corpus the exemplars; "
                                           "default corpus: demo)"))


def command(args) -> int:
    import interp
    from cli.runs import DATA_PARALLEL, checkpoint_for, launch, output_lock
    from interp.distributed import init_from_env

    if args.probe == "all":
        from cli import analyze_all

        return analyze_all.command(args)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "atlas.json").exists())):
        raise interp.InterpError(f"{out} exists and is not an atlas folder; choose another --out")
    if args.engine == "vllm":
        return _analyze_on_vllm(args, out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if (args.launcher or world > 1) and args.probe not in DATA_PARALLEL:
        raise interp.InterpError(f"--probe {args.probe} does not run data-parallel; --launcher, torchrun and "
                                 f"accelerate work with {', '.join(DATA_PARALLEL)}")
    if args.launcher and world == 1:
        return launch(args)
    rank = init_from_env()[0] if args.probe in DATA_PARALLEL else 0  # under a launcher: each rank captures a shard
    if rank != 0:
        return _run_probe(args, out)  # only rank 0 writes, so only rank 0 holds the lock
    with output_lock(out):
        code = _run_probe(args, out)
        if code == 0 and args.probe in DATA_PARALLEL and (checkpoint := checkpoint_for(args, out)) is not None:
            checkpoint.discard()  # the atlas is written; the capture's partial state is no longer needed
    return code


def _run_probe(args, out: Path) -> int:
    from cli import brain_axes, foxp2, hftp, language, lm_head, milan, shared_neurons

    commands = {"lm-head": lm_head, "language-neurons": language, "foxp2": foxp2, "hftp": hftp,
                "brain-axes": brain_axes, "shared-neurons": shared_neurons, "milan": milan}
    if args.probe in commands:
        return commands[args.probe].analyze_command(args, out)
    if args.corpus is None:
        raise error("--probe stats needs --corpus (demo, bible:en,fr, or a file)")
    return _analyze_stats(args, out)


def _analyze_on_vllm(args, out: Path) -> int:
    """--probe stats with --engine vllm: one request per document, the reducers inside vLLM's workers."""
    import asyncio

    from cli.runs import output_lock
    from cli.serve import check_vllm

    if args.probe != "stats":
        raise error(f"--engine vllm runs --probe stats; --probe {args.probe} runs on the transformers engine")
    if args.corpus is None:
        raise error("--probe stats needs --corpus (demo, bible:en,fr, or a file)")
    if args.launcher or args.device_map or args.resume:
        raise error("--engine vllm parallelises and schedules itself: --launcher, --device-map and checkpoints "
                    "belong to the transformers engine")
    check_vllm()
    from interp.corpora import load_corpus
    from interp.models import load_skeleton, model_folder
    from serve.vllm_capture import capture_statistics
    from serve.vllm_engine import VllmEngine, VllmOptions

    corpus = load_corpus(args.corpus, **({"limit": args.limit} if args.limit else {}))
    model = load_skeleton(args.model)
    sites = model.adapter.expand(args.sites, args.layers)
    dtype = compute_dtype(args)  # as on the transformers engine: bfloat16 only where it runs natively
    options = VllmOptions(dtype=dtype, max_model_len=args.max_length + 1, max_num_seqs=max(args.batch_size, 8),
                          tensor_parallel_size=args.tensor_parallel_size,
                          pipeline_parallel_size=args.pipeline_parallel_size, enable_prefix_caching=False)

    async def run():
        engine = VllmEngine(str(model_folder(args.model)[0]), options)
        try:
            return await capture_statistics(engine, model.tokenizer, corpus, sites,
                                            top_k=args.top_k if args.top_k is not None else 16,
                                            max_length=args.max_length, progress=not args.quiet)
        finally:
            engine.close()

    with output_lock(out):
        result = asyncio.run(run())
        return _write_stats(args, out, model, result)


def compute_dtype(args) -> str:
    """--dtype resolved (auto: `interp.auto_dtype` on the device the model runs on), printed as the run's header."""
    from interp.distributed import world

    if args.dtype != "auto":
        name, why = args.dtype, f"--dtype {args.dtype}"
    else:
        import torch

        from interp.models import auto_dtype

        on_gpu = args.device_map or getattr(args, "engine", "transformers") == "vllm"
        device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
        name = str(auto_dtype(device)).removeprefix("torch.")
        where = "the GPU" if device == "cuda" else "this CPU"
        why = (f"auto: {where} runs bfloat16 natively" if name == "bfloat16" else
               f"auto: {where} has no native bfloat16 (AVX512-BF16 or AMX), so bfloat16 would be emulated, ~9x slower")
    if world()[0] == 0:
        print(f"# dtype {name} ({why})", flush=True)
    return name


def _analyze_stats(args, out: Path) -> int:
    from interp.corpora import load_corpus
    from interp.distributed import world
    from cli.runs import checkpoint_for
    from probes.stats import activation_statistics

    corpus = load_corpus(args.corpus, **({"limit": args.limit} if args.limit else {}))
    rank = world()[0]
    checkpoint = checkpoint_for(args, out)
    model = load(args, dtype=compute_dtype(args))
    sites = model.adapter.expand(args.sites, args.layers)
    top_k = args.top_k if args.top_k is not None else 16
    result = activation_statistics(model, corpus, sites, top_k=top_k, batch_size=args.batch_size,
                                   max_length=args.max_length, progress=not args.quiet and rank == 0,
                                   checkpoint=checkpoint)
    if rank != 0:
        return 0  # rank 0 holds the merged reducers and writes the one atlas
    return _write_stats(args, out, model, result)


def _write_stats(args, out: Path, model, result) -> int:
    """The stats atlas (atlas.json, tensors.safetensors, report.html), whichever engine captured."""
    from atlases import Atlas
    from atlases.report import render_report
    from interp.exemplars import token_context

    atlas = Atlas(model=model.name, revision=model.revision, sites=result.sites, method="activation-statistics",
                  tensors=result.tensors, params={**result.params, "dtype_requested": args.dtype, "corpus": args.corpus},
                  documents=result.documents)
    texts = {d["index"]: d["text"] for d in result.documents}
    ctx = lambda d, p: token_context(model.tokenizer, texts[d], p, max_length=args.max_length)  # noqa: E731
    atlas.save(out, extra_files={"report.html": render_report(atlas, ctx)})
    print(f"wrote {out}/atlas.json, tensors.safetensors and report.html "
          f"({len(result.sites)} sites, {result.params['n_tokens']} tokens)")
    return 0
