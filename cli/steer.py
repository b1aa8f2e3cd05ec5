"""`interp steer`: generate with edits applied.

Two forms share the generation options (--model, --prompt, --compare, --max-new-tokens, ...):
- generic edits: `interp steer --prompt TEXT --clamp ... | --add ... | --contrast ... | --recipe ... |
  --concept ...`;
- a method as a subcommand: `interp steer foxp2 --target es ...`, `interp steer brain-axis ...`,
  `interp steer snrf ...`, `interp steer dopamine ...`; its --help lists only its own options and
  the generation options. Generic edits given before the method name combine with it
  (`interp steer --recipe r.safetensors foxp2 --target es`).
The subcommand is optional (argparse subparsers with required=False); a method's options given
without it, and the old `--method X`, are refused with one line naming the form to use.
"""

from __future__ import annotations

import argparse
import math
import shutil
import textwrap
from pathlib import Path

from cli.argtypes import finite, positive
from cli.base import Parser, error
from cli.loading import load

# each method's one-line help; cli/foxp2.py, brain_axes.py, shared_neurons.py and dopamine.py hold its options
METHODS = {
    "foxp2": "Neural FOXP2: make --target the model's default language (localises first)",
    "brain-axis": "steer along --axis of a brain-axes --atlas with --strength",
    "snrf": "fuse --donor's skill into the shared neurons of --model (a VLM)",
    "dopamine": "train per-neuron gates for a mode (--train) and save them (--out)",
}
STEER_METHODS = tuple(METHODS)
EXAMPLES = """examples:
  interp steer --prompt 'The movie was' --clamp blocks.5.mlp.hook_post:123=20 --compare
  interp steer --prompt 'My day' --add blocks.8.hook_resid_post:vec.safetensors*4
  interp steer --prompt 'The movie was' --contrast love.txt hate.txt --site blocks.10.hook_resid_pre --scale 6 --compare
  interp steer --prompt 'Hello' --recipe edits.safetensors
  interp steer --prompt 'My favourite animal is' --concept ' dog' --compare
  interp steer foxp2 --target es --prompt 'The best way to learn is' --compare
  interp steer brain-axis --atlas axes/ --axis 0 --strength 2 --prompt 'Once upon a time' --compare
  interp steer dopamine --train switch:es --out spanish.safetensors
  interp steer --prompt 'My friend and I' --recipe spanish.safetensors --compare
each method's own options: interp steer METHOD --help"""


def _generation_options(p: argparse.ArgumentParser, prompt_note: str = "") -> None:
    from cli.loading import add_options as placement_options

    p.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help=f"a prompt to continue (repeat for more{prompt_note})")
    p.add_argument("--compare", action="store_true", help="also generate without edits; print both side by side")
    p.add_argument("--max-new-tokens", type=positive, default=32, metavar="N", help="tokens to generate (default 32)")
    p.add_argument("--repetition-penalty", type=finite, default=1.0, metavar="R",
                   help="HF repetition penalty (default 1: none; 1.3 keeps a small model's greedy text from looping)")
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers",
                   help="transformers (default), or vllm: generate inside vLLM with a recipe, clamps or added "
                        "vectors (needs vLLM: make install-vllm)")
    p.add_argument("--save-recipe", metavar="FILE",
                   help="also write every edit this command applies (the generic edits and the method's) to FILE "
                        "as one recipe (.safetensors), e.g. for interp recipe export-gguf")
    placement_options(p.add_argument_group("large models"))


def _generic_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("edits (without a method, or before its name)")
    g.add_argument("--clamp", action="append", default=[], metavar="SITE:NEURON=VALUE",
                   help="set one unit to a value, e.g. blocks.5.mlp.hook_post:123=4.0 (repeatable)")
    g.add_argument("--add", action="append", default=[], metavar="SITE:FILE*SCALE",
                   help="add SCALE x a vector read from a safetensors file (tensor 'vector' or its only "
                        "tensor), e.g. blocks.8.hook_resid_post:vec.safetensors*4 (repeatable; *SCALE "
                        "defaults to 1)")
    g.add_argument("--contrast", nargs=2, metavar=("POS.txt", "NEG.txt"),
                   help="ActAdd: add --scale x (mean activation of POS prompts - mean of NEG prompts) at "
                        "--site; one prompt per non-empty line")
    g.add_argument("--site", help="site for --contrast, e.g. blocks.10.hook_resid_pre")
    g.add_argument("--scale", type=finite, help="scale for --contrast (e.g. 4-8 for mid-layer residual sites)")
    g.add_argument("--recipe", metavar="FILE", help="an edit recipe (.safetensors) written by interp.recipes")
    g.add_argument("--concept", metavar="TOKEN",
                   help="clamp the neuron whose write direction most means TOKEN (e.g. ' dog'), after a sweep "
                        "of clamp values measuring P(TOKEN) on neutral prompts")
    g.add_argument("--direction", choices=["write", "up"],
                   help="how --concept finds and clamps its neuron: write (default): by the down_proj column, "
                        "clamped at mlp.hook_post (the product feeding down_proj); up: by the up_proj row (read "
                        "direction), clamped at mlp.hook_pre_linear (the up_proj output; mlp.hook_pre on ungated MLPs)")
    g.add_argument("--atlas", metavar="DIR", help="lm-head atlas for --concept (else the map is computed)")
    g.add_argument("--clamp-value", type=finite, help="value for --concept (default: picked from the sweep)")
    g.add_argument("--sweep", metavar="V,V,...", help="clamp values to try for --concept")
    g.add_argument("--positions", default="all", choices=["all", "prompt", "generated"],
                   help="which tokens the --clamp/--add/--contrast edits act on (recipes keep their own)")


PAPER_METHODS = ("brain-axis", "foxp2", "snrf")  # methods whose settings have choices that differ from their paper (cli/paper.py)


def _method_options(name: str, p: argparse.ArgumentParser) -> None:
    from cli import brain_axes, dopamine, foxp2, shared_neurons

    from cli import paper

    group = p.add_argument_group(f"{name} options")
    if name in PAPER_METHODS:
        paper.add_option(group)
    {"foxp2": lambda: foxp2.add_options(group, steer=True),
     "brain-axis": lambda: brain_axes.add_options(group, steer=True),
     "snrf": lambda: shared_neurons.add_options(group, steer=True),
     "dopamine": lambda: dopamine.add_options(group)}[name]()


class _Elsewhere(argparse.Action):
    """An option given where it does not belong (hidden from --help): one line saying where it goes."""

    def __init__(self, option_strings, dest, where: str = "", **kwargs):
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.where = where

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == "--method":
            parser.error(f"the method is a subcommand now: use interp steer {values or 'METHOD'} ... "
                         f"instead of --method {values or 'METHOD'}")
        parser.error(f"{option_string} {self.where}")


def add_parser(sub) -> None:
    st = sub.add_parser("steer", help="generate with edits applied (clamps, added vectors, ActAdd, recipes, "
                                      f"concept neurons; methods {', '.join(STEER_METHODS)})",
                        description="Generate greedy continuations of prompts with edits applied at sites; "
                                    "with --compare, print unsteered and steered side by side. A steering "
                                    "method is a subcommand: interp steer METHOD --help.",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _generation_options(st, "; optional with dopamine --train")
    _generic_options(st)
    shared = {a.dest for a in st._actions}
    methods = st.add_subparsers(dest="method", metavar="METHOD", parser_class=Parser,
                                title="methods (optional; each has its own --help)")
    owners: dict[str, list[str]] = {}
    for name, help_text in METHODS.items():
        m = methods.add_parser(name, help=help_text, description=f"interp steer {name}: {help_text}.")
        _generation_options(m, "; optional: without one, only train and save" if name == "dopamine" else "")
        _method_options(name, m)
        for action in m._actions:
            if action.dest in shared:  # given before the method name, the steer parser's value stands
                action.default = argparse.SUPPRESS
            for option in action.option_strings:
                if option not in st._option_string_actions:
                    owners.setdefault(option, []).append(f"interp steer {name}")
        for option in sorted(set(st._option_string_actions) - set(m._option_string_actions)):
            m.add_argument(option, action=_Elsewhere, where=f"goes before the method's name: interp steer "
                                                            f"{option} ... {name} ...")
    for option, where in owners.items():
        st.add_argument(option, action=_Elsewhere, where="goes with " + " or ".join(where))
    st.add_argument("--method", action=_Elsewhere)


def _check_generic(args) -> None:
    """The generic edit options: syntax and files, before the model loads."""
    from cli.edits import number, parse_add, parse_clamp, read_prompts, read_vector

    args._clamps = [parse_clamp(s) for s in args.clamp]
    args._adds = [parse_add(s) for s in args.add]
    args._vectors = [read_vector(path) for _, path, _ in args._adds]
    if args.contrast:
        if args.site is None or args.scale is None:
            raise error("--contrast needs --site SITE and --scale S")
        args._pos = read_prompts(args.contrast[0], "positive")
        args._neg = read_prompts(args.contrast[1], "negative")
    elif args.site is not None or args.scale is not None:
        raise error("--site and --scale go with --contrast POS.txt NEG.txt")
    if args.scale is not None and not math.isfinite(args.scale):
        raise error("--scale must be a finite number")
    if args.recipe and not Path(args.recipe).is_file():
        raise error(f"recipe {args.recipe} does not exist" if not Path(args.recipe).exists()
                    else f"recipe {args.recipe} is not a file")
    if args.concept is None and (args.clamp_value is not None or args.sweep):
        raise error("--clamp-value and --sweep go with --concept TOKEN")
    if args.concept is None and args.direction is not None:
        raise error("--direction goes with --concept TOKEN")
    if args.atlas and args.concept is None and args.method != "brain-axis":
        raise error("--atlas goes with --concept TOKEN or interp steer brain-axis")
    args._sweep = [number(v, "--sweep") for v in (args.sweep or "").split(",") if v.strip()]
    if args.atlas and not (Path(args.atlas) / "atlas.json").is_file():
        raise error(f"--atlas {args.atlas} is not an atlas folder (no atlas.json)")


def _check_method(args) -> None:
    from cli import brain_axes, dopamine, foxp2, shared_neurons

    {"foxp2": foxp2.check_args, "brain-axis": brain_axes.check_steer,
     "snrf": lambda a: shared_neurons.check(a, steer=True), "dopamine": dopamine.check}[args.method](args)


def _method_edits(args, model, prompts: list[str], notes: list[str]) -> list:
    from cli import brain_axes, dopamine, foxp2, shared_neurons

    if args.method == "foxp2":
        return foxp2.steer_edits(args, model, notes)
    if args.method == "brain-axis":
        return brain_axes.steer_edits(args, model, prompts, notes)
    if args.method == "snrf":
        return shared_neurons.steer_edits(args, model, notes)
    return dopamine.train_edits(args, model, notes)


def command(args) -> int:
    import interp
    from cli.edits import concept_edit, generic_edits

    # cheap checks first: syntax and files, before the model loads
    if args.max_new_tokens < 1:
        raise error("--max-new-tokens must be at least 1")
    if not (args.repetition_penalty > 0 and math.isfinite(args.repetition_penalty)):
        raise error("--repetition-penalty must be a positive number")
    prompts = [p for p in args.prompt if p.strip()]
    training_only = args.method == "dopamine" and not args.prompt
    if not prompts and not training_only:
        raise error("no prompt: give --prompt TEXT (repeatable)")
    _check_generic(args)
    if args.method:
        _check_method(args)
    if not (args._clamps or args._adds or args.contrast or args.recipe or args.concept or args.method):
        raise error("no edits given: use --clamp, --add, --contrast, --recipe or --concept, or a method: "
                    f"interp steer {'|'.join(STEER_METHODS)}")

    if args.engine == "vllm":
        if args.save_recipe:
            raise error("--save-recipe goes with --engine transformers (save the recipe there, then serve it)")
        return _steer_on_vllm(args, prompts)
    model = load(args)
    edits, notes = generic_edits(args, model)
    if args.method:
        edits += _method_edits(args, model, prompts, notes)
        if training_only:
            if args.save_recipe:
                _save_recipe(args, model, edits, notes)
            print("\n".join(f"# {n}" for n in notes))
            return 0
    if args.concept is not None:
        edits.append(concept_edit(args, model, notes))
    if args.save_recipe:
        _save_recipe(args, model, edits, notes)
    gen = dict(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty)
    steered = interp.generate(model, prompts, edits, **gen)  # first: a bad recipe edit fails before any output
    plain = interp.generate(model, prompts, [], **gen) if args.compare else None
    return _print(args, model.name, prompts, steered, plain, notes)


def _save_recipe(args, model, edits: list, notes: list[str]) -> None:
    """--save-recipe: the edits this command applies, with the method's provenance (if it gives one) and the argv."""
    from interp.recipes import save_recipe

    provenance = {"writer": f"interp steer{' ' + args.method if args.method else ''}", "argv": args.argv,
                  **getattr(args, "_provenance", {})}
    save_recipe(args.save_recipe, edits, model, provenance)
    notes.append(f"recipe written to {args.save_recipe} ({len(edits)} edit(s))")


def _steer_on_vllm(args, prompts: list[str]) -> int:
    """The generic edits (--recipe, --clamp, --add) applied inside vLLM (`serve.vllm_engine`)."""
    import asyncio

    from cli.edits import generic_edits
    from cli.serve import check_vllm

    check_vllm()
    if args.contrast or args.concept or args.method or args.device_map:
        raise error("--engine vllm takes --recipe, --clamp and --add (edits that need no forward pass here); "
                    "compute other edits on the transformers engine and save them as a recipe")
    from interp.models import load_skeleton, model_folder
    from serve.vllm_engine import VllmEngine, VllmOptions

    model = load_skeleton(args.model)  # vLLM holds the weights
    edits, notes = generic_edits(args, model)
    ids = [model.tokenizer(p)["input_ids"] for p in prompts]
    limit = max(len(i) for i in ids) + args.max_new_tokens

    async def run() -> tuple[list, list | None]:
        options = VllmOptions(dtype="float32", max_model_len=limit, max_num_seqs=len(ids))  # as load_model's
        engine = VllmEngine(str(model_folder(args.model)[0]), options)
        try:
            gen = dict(max_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty)
            steered = await engine.complete(ids, edits, **gen)
            plain = await engine.complete(ids, [], **gen) if args.compare else None
            return steered, plain
        finally:
            engine.close()

    steered, plain = asyncio.run(run())
    decode = lambda rows: [model.tokenizer.decode(t, skip_special_tokens=True) for t in rows]  # noqa: E731
    return _print(args, model.name, prompts, decode(steered), decode(plain) if plain else None,
                  notes + ["engine: vLLM"])


def _print(args, name: str, prompts: list[str], steered: list[str], plain: list[str] | None, notes: list[str]) -> int:
    from cli.edits import side_by_side, wrap

    width = shutil.get_terminal_size((100, 24)).columns
    print(f"# {name}, greedy, {args.max_new_tokens} new tokens, repetition penalty "
          f"{args.repetition_penalty:g}, positions {args.positions}")
    for n in notes:
        print(f"# {n}")
    for i, prompt in enumerate(prompts):
        print(f"\n[{i + 1}] {prompt}")
        if plain is None:
            print(textwrap.indent("\n".join(wrap(steered[i], width - 4)), "  "))
        else:
            print(side_by_side(plain[i], steered[i], width))
    return 0
