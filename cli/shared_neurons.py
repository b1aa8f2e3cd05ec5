"""`interp analyze --probe shared-neurons --model VLM --pair LLM` and `interp steer snrf`.

Samples: for the VLM testbed (`testbeds.vlm`, recognised by its metrics.json) the
VLM answers `--task` from images and the LLM the same questions with each image replaced by its
caption (`testbeds.vlm.text_twins`); for other model
pairs, `--prompts FILE` (one prompt per line) goes to both text backbones as text, or with
`--images DIR` (Llava and Qwen2-VL families) the VLM gets each prompt with an image through its
own processor (`transformers.AutoProcessor` of its folder) and the LLM the same prompt as text:
the images in DIR sorted by file name, paired with the prompts in order (as many prompts as
images), or one prompt for every image; `--samples` pairs at most. The VLM's text-backbone
activations are what the probe scores (image positions included).

analyze writes an atlas: per module and layer the LLM set, the VLM set and the shared set
(bool masks), the overlap table (against random sets of the same sizes), overlap.png, and
with `--amplify A,B,…` the amplification table (shared vs random units) and with `--snrf-beta
B,…` the SNRF table per β (base VLM, SNRF, full delta, random units; recognition, sums, products),
both on the testbed's held-out questions.
steer snrf adds β · rank-r(W_LLM − W_VLM) on the shared units as runtime LowRank
edits (`--save-merged DIR` writes the merged model folder instead of keeping it runtime).
"""

from __future__ import annotations

import argparse
import html
import math
from pathlib import Path

from interp.errors import InterpError
from cli import paper
from cli.argtypes import finite, positive
from cli.edits import read_prompts
from cli.loading import load


def add_options(group: argparse._ArgumentGroup, *, steer: bool) -> None:
    if steer:
        group.add_argument("--donor", metavar="LLM", help="snrf: the LLM whose skill is fused into --model (a VLM)")
        group.add_argument("--rank", type=positive, default=4, help="snrf: rank of the truncated SVD of W_LLM − W_VLM")
        group.add_argument("--save-merged", metavar="DIR", help="snrf: write the merged VLM to a new model folder")
        group.add_argument("--beta", type=finite, default=None, help="snrf: β, the strength (default 0.5)")
    else:
        group.add_argument("--pair", metavar="LLM", help="shared-neurons: the LLM to compare --model (a VLM) with")
        group.add_argument("--amplify", metavar="A,B,...", help="shared-neurons: amplification factors to test")
        group.add_argument("--snrf-beta", metavar="B,...", help="shared-neurons: SNRF table (base, SNRF, full delta, "
                           "random units) on the testbed's held-out tasks for each β")
        group.add_argument("--snrf-rank", type=positive, default=4, help="shared-neurons: rank for --snrf-beta (default 4)")
        group.add_argument("--held-out", type=positive, default=200,
                           help="shared-neurons: held-out questions per task for --amplify / --snrf-beta (default 200)")
    group.add_argument("--task", default="product", choices=["recognize", "sum", "product"],
                       help="testbed task the samples come from (default product)")
    group.add_argument("--samples", type=positive, default=100, help="samples per model (default 100, as in the paper)")
    group.add_argument("--ratio", type=finite, default=0.3, help="top ratio kept per module and layer (default 0.3)")
    group.add_argument("--prompts", metavar="FILE", help="text prompts for both models (models other than the testbed)")
    group.add_argument("--images", metavar="DIR", help="image files for the VLM (Llava, Qwen2-VL; through its own "
                       "processor), sorted by name and paired in order with --prompts (as many prompts as images, "
                       "or one prompt for all); the LLM gets the prompts as text")
    for flag, (_, help_text) in QUIRKS.items():
        group.add_argument(flag, action="store_true", help=help_text)


# the public code's quirks one by one (--paper sets all four): flag → (the settings field, help)
QUIRKS = {
    "--swap-ratios": ("swap_ratios", "public-code quirk: FFN and attention keep ratios swapped (its Llama paths)"),
    "--pool-layers": ("pool_layers", "public-code quirk: pool the kept indices across layers before intersecting"),
    "--beta-quirk": ("beta_quirk", "public-code quirk: SNRF's β never applied (β = 1)"),
    "--gqa-quirk": ("gqa_quirk", "public-code quirk: k/v units picked by query dimension i and mapped to k/v rows "
                                 "by i // 4 (right: (h // group)·d_head + j)"),
}


def settings_for(settings, args):
    """`settings` with --paper's choices, then each public-code quirk flag given (--swap-ratios, --pool-layers,
    --beta-quirk, --gqa-quirk) switched on where `settings` has that field."""
    from dataclasses import fields, replace

    settings = paper.apply(settings, args)
    names = {f.name for f in fields(settings)}
    on = {field: True for field, _ in QUIRKS.values() if field in names and getattr(args, field, None)}
    return replace(settings, **on) if on else settings


def testbed_root(model) -> Path | None:
    """The testbed folder a model was loaded from (its parent holds metrics.json), else None."""
    folder = Path(str(model.source))
    return folder.parent if (folder.parent / "metrics.json").is_file() else None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(value: str) -> list[Path]:
    """The image files of --images DIR, sorted by name."""
    folder = Path(value)
    if not folder.is_dir():
        raise InterpError(f"--images {folder} is not a folder")
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InterpError(f"--images {folder} has no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def image_pairs(prompts: list[str], files: list[Path], n: int) -> list[tuple[str, Path]]:
    """(prompt, image) pairs: in order, or one prompt for every image; at most n."""
    if len(prompts) == 1:
        prompts = prompts * len(files)
    if len(prompts) != len(files):
        raise InterpError(f"--prompts has {len(prompts)} prompts for {len(files)} images in --images: give one "
                          "prompt per image (paired in order of file name) or one prompt for all")
    return list(zip(prompts, files))[:n]


def samples(vlm, llm, args) -> tuple[list[dict], list[dict]]:
    """Forward kwargs (batch 1) for the VLM and for the LLM."""
    from testbeds import vlm as tb
    from probes.shared_neurons import image_inputs, text_inputs

    if getattr(args, "images", None):
        from PIL import Image

        if not args.prompts:
            raise InterpError("--images needs --prompts FILE (one prompt per image, or one for all)")
        pairs = image_pairs(read_prompts(args.prompts, "--prompts"), image_files(args.images), args.samples)
        prompts = [p for p, _ in pairs]
        images = []
        for _, f in pairs:
            try:
                with Image.open(f) as im:
                    images.append(im.convert("RGB"))
            except OSError as exc:
                raise InterpError(f"--images: cannot read {f} ({type(exc).__name__})") from None
        return image_inputs(vlm, prompts, images), text_inputs(llm, prompts)  # SharedNeuronsError: one line
    if args.prompts:
        prompts = read_prompts(args.prompts, "--prompts")[:args.samples]
        return text_inputs(vlm, prompts), text_inputs(llm, prompts)
    if testbed_root(vlm) is None:
        raise InterpError(f"{vlm.name} is not the VLM testbed: give --prompts FILE for other models")
    image_examples = tb.task_examples(args.task, "train", n=args.samples)
    return tb.forward_inputs(vlm, image_examples), tb.forward_inputs(llm, tb.text_twins(image_examples))


def _numbers(flag: str, value: str | None) -> list[float]:
    try:
        numbers = [float(x) for x in value.split(",")] if value else []
    except ValueError:
        numbers = [math.nan]
    if not all(math.isfinite(x) for x in numbers):
        raise InterpError(f"{flag} takes comma-separated numbers, like 1.5,2 (got {value!r})")
    return numbers


def check(args, steer: bool) -> None:
    if args.samples < 1 or not 0 < args.ratio <= 1:
        raise InterpError("--samples must be at least 1 and --ratio in (0, 1]")
    if getattr(args, "images", None):  # before any model loads
        if not args.prompts:
            raise InterpError("--images needs --prompts FILE (one prompt per image, or one for all)")
        image_pairs(read_prompts(args.prompts, "--prompts"), image_files(args.images), args.samples)
    if steer:
        if not args.donor:
            raise InterpError("interp steer snrf needs --donor LLM (the model whose skill is fused in)")
        args.beta = 0.5 if args.beta is None else args.beta
        if args.rank < 1 or not math.isfinite(args.beta):
            raise InterpError("--rank must be at least 1 and --beta a finite number")
        if args.save_merged and Path(args.save_merged).exists() and any(Path(args.save_merged).iterdir()):
            raise InterpError(f"--save-merged {args.save_merged} exists and is not empty")
    elif not args.pair:
        raise InterpError("--probe shared-neurons needs --pair LLM (the model to compare --model with)")
    else:
        args._alphas, args._betas = _numbers("--amplify", args.amplify), _numbers("--snrf-beta", args.snrf_beta)
        if args.snrf_rank < 1 or args.held_out < 1:
            raise InterpError("--snrf-rank and --held-out must be at least 1")


def _sets(vlm, llm, args):
    from probes.shared_neurons import SharedSettings, neuron_sets

    v_in, l_in = samples(vlm, llm, args)
    settings = settings_for(SharedSettings(ratio_ffn=args.ratio, ratio_attn=args.ratio), args)
    progress = not getattr(args, "quiet", False)
    return neuron_sets(llm, l_in, settings, progress=progress), neuron_sets(vlm, v_in, settings, progress=progress)


def analyze_command(args, out: Path) -> int:
    import torch

    import interp
    from atlases import Atlas
    from probes.shared_neurons import overlap, overlap_png, overlap_table, shared_sets

    from testbeds import vlm as tb

    check(args, steer=False)
    alphas, betas = args._alphas, args._betas
    vlm, llm = load(args), load(args, args.pair)
    if (alphas or betas) and testbed_root(vlm) is None:
        raise InterpError("--amplify and --snrf-beta need the VLM testbed (its questions and answers)")
    llm_sets, vlm_sets = _sets(vlm, llm, args)
    overlaps = overlap(llm_sets, vlm_sets)
    shared = shared_sets(llm_sets, vlm_sets)
    text = overlap_table(overlaps)
    tables = {}
    if alphas:
        from steering.snrf_eval import amplification_table

        examples = tb.task_examples(args.task, "held_out", n=args.held_out)
        table = amplification_table(lambda edits: tb.answer(vlm, examples, edits),
                                    [e.answer for e in examples], shared, alphas)
        text += "\n\n" + table.text()
        tables["amplification"] = [vars(r) for r in table.rows]
    if betas:
        from steering.snrf import SnrfSettings
        from steering.snrf_eval import snrf_table

        tasks = tb.image_tasks(vlm, args.held_out)  # one question set for every β
    for beta in betas:
        settings = settings_for(SnrfSettings(rank=args.snrf_rank, beta=beta), args)
        table = snrf_table(vlm, llm, shared, tasks, settings, combined=tb.ARITHMETIC)
        text += f"\n\nSNRF, held-out accuracy ({args.held_out} questions per task)\n" + table.text()
        tables[f"snrf beta={beta:g}"] = table.accuracy
    tensors = {}
    for name, sets in (("llm", llm_sets.sets), ("vlm", vlm_sets.sets), ("shared", shared)):
        for module, by_layer in sets.items():
            for l, mask in by_layer.items():
                tensors[f"blocks.{l}.{module}/{name}"] = mask.to(torch.int8).contiguous()
    params = {"vlm": vlm.name, "llm": llm.name, "task": args.task, "samples": args.samples, "ratio": args.ratio,
              "tables": tables, "paper_mode": _paper_mode(args),
              "overlap": {m: {"layers": o.layers, "overlap": o.overlap, "random": o.random_overlap}
                          for m, o in overlaps.items()}}
    report = (f"<!doctype html><html><head><meta charset='utf-8'><title>interp shared neurons</title></head><body>"
              f"<h1>Shared neurons: {html.escape(vlm.name)} ∩ {html.escape(llm.name)}</h1><img src='overlap.png'>"
              f"<pre>{html.escape(text)}</pre></body></html>")
    Atlas(model=vlm.name, sites=sorted({k.split("/")[0] for k in tensors}), method="shared-neurons", tensors=tensors,
          params=params).save(out, extra_files={"report.html": report, "table.txt": text + "\n"},
                              binary_files={"overlap.png": overlap_png(overlaps)})
    print(text)
    print(f"wrote {out}")
    return 0


def _paper_mode(args) -> dict:
    from probes.shared_neurons import SharedSettings
    from steering.snrf import SnrfSettings

    return {"shared": settings_for(SharedSettings(), args).provenance(),
            "snrf": settings_for(SnrfSettings(), args).provenance()}


def steer_edits(args, model, notes: list[str]) -> list:
    """interp steer snrf: shared neurons of --model and --donor, then the SNRF edits (or the merged folder)."""
    import interp
    from probes.shared_neurons import shared_sets
    from steering.snrf import SnrfSettings, save_merged, snrf_edits

    donor = load(args, args.donor)
    llm_sets, vlm_sets = _sets(model, donor, args)
    shared = shared_sets(llm_sets, vlm_sets)
    settings = settings_for(SnrfSettings(rank=args.rank, beta=args.beta), args)
    edits = snrf_edits(model, donor, shared, settings)
    choices = {**_paper_mode(args)["shared"]["choices"], **settings.provenance()["choices"]}
    if all(choices.values()):
        notes.append("paper mode: " + ", ".join(f"{k}={v}" for k, v in choices.items()))
    elif any(choices.values()):
        notes.append("public-code quirks on: " + ", ".join(k for k, v in choices.items() if v))
    n = sum(int(m.sum()) for by_layer in shared.values() for m in by_layer.values())
    notes.append(f"SNRF from {donor.name}: rank {args.rank}, β {args.beta:g}, {n} shared units, {len(edits)} edits")
    if args.save_merged:
        save_merged(model, edits, args.save_merged)
        notes.append(f"merged model written to {args.save_merged}")
    return edits
