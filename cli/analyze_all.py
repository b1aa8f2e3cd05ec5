"""`interp analyze --probe all`: every analysis that applies to the model, with small defaults, merged into one
neuron-card index; one progress bar over the steps, and resume (a finished step is not redone).

Layout of `--out OUT`:

- `OUT/steps/<step>/`: each step's atlas, as `--probe <step>` writes it (stats, lm-head, language-neurons,
  hftp, milan; foxp2, shared-neurons and brain-axes when their inputs are given);
- `OUT/index/`: the neuron-card index of them all (`atlases.cards`; `interp atlas merge OUT/index MORE…` adds
  more, `interp atlas cards OUT/index` shows it);
- `OUT/logs/<step>.log`: what the step printed;
- `OUT/state.json` (written atomically): per step, the arguments it ran with and whether it finished, and the
  atlases the index was merged from.

A step is skipped on a rerun when it finished with the same arguments (only the options that step reads count)
and its atlas is the one it wrote; otherwise it runs again — a step killed midway continues from its capture
checkpoint when there is one. The index is merged again only when a step atlas changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

from cli.base import error

# the steps merged into the card index, in order, and the ones run only when their inputs are given
CARD_STEPS = ("stats", "lm-head", "language-neurons", "hftp", "milan")
EXTRA_STEPS = {"foxp2": ("target",), "shared-neurons": ("pair",), "brain-axes": ("meg", "words")}
NEEDS = {"foxp2": "--target LANG", "shared-neurons": "--pair LLM (and a VLM as --model)",
         "brain-axes": "--meg DIR and --words TSV"}

# small defaults, each used only where the option was not given: all 30 layers of smollm2-135m in a few minutes
# on 2 CPU cores (plus, on the first run, ~4 min to train the MILAN captioner, then cached)
SMALL = {
    "stats": {"corpus": "demo", "limit": 64, "max_length": 64},
    "lm-head": {"directions": "write"},
    "language-neurons": {"langs": "en,es,fr,de", "verses": 100, "grid_verses": 0, "max_length": 64},
    "hftp": {"streams": 10, "groups": 5, "sentences": 20, "permutations": 200},
    "milan": {"corpus": "demo", "limit": 64, "max_length": 64, "units": "4", "beam": 10, "max_tokens": 10},
}
HELP = ("all: every analysis that applies, with small defaults (stats and milan: --corpus demo --limit 64 "
        "--max-length 64; lm-head: --directions write; language-neurons: --langs en,es,fr,de --verses 100 "
        "--grid-verses 0 --max-length 64; hftp: --streams 10 --groups 5 --sentences 20 --permutations 200; milan: "
        "--units 4 --beam 10 --max-tokens 10; any option given overrides), merged into the neuron-card index "
        "OUT/index, each step's atlas in OUT/steps/STEP; foxp2, shared-neurons and brain-axes run when --target, "
        "--pair, --meg/--words are given; a rerun skips the steps that finished with the same arguments")

# the options each step reads besides its own group's (a change in one of them reruns that step)
_COMMON = ("model", "device_map", "offload_folder", "paper")  # --paper: hftp, brain-axes, shared-neurons
_READS = {
    "stats": ("corpus", "limit", "sites", "layers", "dtype", "batch_size", "max_length", "top_k"),
    "lm-head": ("layers", "top_k"),
    "language-neurons": ("dtype", "batch_size", "max_length"),
    "hftp": ("sites", "layers"),
    "milan": ("corpus", "limit", "sites", "layers", "batch_size", "max_length", "top_k"),
}
_EXTRA_READS = ("corpus", "limit", "sites", "layers", "dtype", "batch_size", "max_length", "top_k")
_NOT_ARGS = ("search",)  # printing only


def _own_options(step: str) -> list[str]:
    """The dests of the step's own option group (cli/<module>.add_options)."""
    from cli import brain_axes, foxp2, hftp, language, lm_head, milan, shared_neurons

    adders = {"lm-head": (lm_head, {}), "language-neurons": (language, {}), "hftp": (hftp, {}),
              "milan": (milan, {}), "foxp2": (foxp2, {"steer": False}),
              "shared-neurons": (shared_neurons, {"steer": False}), "brain-axes": (brain_axes, {"steer": False})}
    if step not in adders:
        return []
    module, kw = adders[step]
    p = argparse.ArgumentParser(add_help=False)
    module.add_options(p.add_argument_group(), **kw)
    return [a.dest for a in p._actions if a.dest not in _NOT_ARGS]


def _given(args) -> set[str]:
    """The options the command line gave (not argparse's defaults): the analyze parser re-run on args.argv
    with every default suppressed."""
    from cli.main import build_parser

    argv = getattr(args, "argv", None)
    if argv is None:
        return set()
    parser = build_parser()
    command = next(a for a in parser._actions if a.dest == "command")
    for action in command.choices["analyze"]._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def _check(args, out: Path) -> None:
    """Nonsense for --probe all, refused in one line before anything loads."""
    if args.engine != "transformers":
        raise error("--probe all runs every step on the transformers engine; --engine vllm is for --probe stats")
    if args.launcher:
        raise error("--probe all runs its steps in this process; --launcher is for one data-parallel probe "
                    "(stats, language-neurons, milan)")
    if args.sites != "mlp.hook_post":
        raise error(f"--probe all makes neuron cards of MLP neurons (mlp.hook_post; language-neurons reads "
                    f"mlp.hook_pre), so --sites {args.sites!r} does not apply; pick the neurons with --layers")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "state.json").exists())):
        raise error(f"{out} exists and is not an `analyze --probe all` folder (no state.json); choose another --out")


def _step_args(args, given: set[str], step: str) -> argparse.Namespace:
    a = argparse.Namespace(**vars(args))
    a.probe, a.quiet = step, True
    for name, value in SMALL.get(step, {}).items():
        if name not in given:
            setattr(a, name, value)
    if step in ("stats", "milan"):
        a.corpus = args.corpus or "demo"
    elif step in ("lm-head", "language-neurons"):
        a.corpus = None  # lm-head reads weights; language-neurons its parallel Bible (or --lang-files)
    return a


def _identity(step: str, a: argparse.Namespace) -> dict:
    """The arguments that make a step's atlas what it is."""
    names = (*_COMMON, *_READS.get(step, _EXTRA_READS), *_own_options(step))
    return {name: getattr(a, name, None) for name in sorted(set(names))}


def _header(folder: Path) -> str | None:
    """The atlas's header checksum: which atlas this folder holds (None: no complete atlas)."""
    try:
        return json.loads((folder / "atlas.json").read_text(encoding="utf-8")).get("header_sha256")
    except (OSError, ValueError):
        return None


def _checkpoints(step_out: Path) -> list[Path]:
    """What an interrupted step leaves beside its atlas folder (capture and MILAN checkpoints)."""
    return [step_out.parent / f".{step_out.name}.checkpoint",
            step_out.parent / f".{step_out.name}.milan-checkpoint.json"]


def _discard_checkpoints(step_out: Path) -> None:
    for p in _checkpoints(step_out):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


class _State:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("steps", {})

    def save(self) -> None:
        from interp.cache import write_text_atomic

        write_text_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True))


def command(args) -> int:
    from tqdm.auto import tqdm

    from cli.runs import output_lock

    out = Path(args.out)
    _check(args, out)
    given = _given(args)
    plan = [(step, None) for step in CARD_STEPS]
    for step, needs in EXTRA_STEPS.items():
        plan.append((step, None if all(getattr(args, n, None) for n in needs) else f"needs {NEEDS[step]}"))
    todo = [step for step, why in plan if why is None]
    with output_lock(out):
        (out / "steps").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
        state = _State(out / "state.json")
        bar = tqdm(total=len(todo) + 1, disable=args.quiet, unit="step", file=sys.stderr, dynamic_ncols=True)
        try:
            for step, why in plan:
                if why is not None:
                    bar.write(f"{step}: skipped ({why})", file=sys.stdout)
                    continue
                bar.set_description(step)
                bar.write(_run_step(step, _step_args(args, given, step), out, state), file=sys.stdout)
                bar.update(1)
            bar.set_description("index")
            bar.write(_merge(args, out, todo, state), file=sys.stdout)
            bar.update(1)
        finally:
            bar.close()
    return 0


def _run_step(step: str, a: argparse.Namespace, out: Path, state: _State) -> str:
    from cli.analyze import _run_probe
    from cli.runs import DATA_PARALLEL, checkpoint_for
    from interp.errors import InterpError
    from interp.runs import CheckpointError

    step_out = out / "steps" / step
    ident = _identity(step, a)
    before = state.data["steps"].get(step, {})
    if before.get("args") == ident and before.get("status") == "done" and before.get("atlas") == _header(step_out) \
            and before.get("atlas") is not None:
        return f"{step}: finished earlier with the same arguments, not redone"
    interrupted = before.get("args") == ident and before.get("status") == "running"
    a.resume = interrupted and any(p.exists() for p in _checkpoints(step_out))  # continue a killed capture
    if not a.resume:
        _discard_checkpoints(step_out)  # another run's leftovers would be refused as in the way
    state.data["steps"][step] = {"args": ident, "status": "running"}
    state.save()
    log = out / "logs" / f"{step}.log"
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f, contextlib.redirect_stdout(f):
        try:
            try:
                code = _run_probe(a, step_out)
            except CheckpointError:
                if not a.resume:
                    raise
                _discard_checkpoints(step_out)  # a checkpoint of another run: start the step afresh
                a.resume = False
                code = _run_probe(a, step_out)
        except InterpError as exc:
            raise error(f"step {step}: {exc} (its log: {log})") from None
    if code != 0:
        raise error(f"step {step} exited with code {code} (its log: {log})")
    if step in DATA_PARALLEL and (checkpoint := checkpoint_for(a, step_out)) is not None:
        checkpoint.discard()
    state.data["steps"][step] = {"args": ident, "status": "done", "atlas": _header(step_out),
                                 "seconds": round(time.perf_counter() - start, 1)}
    state.save()
    return f"{step}: done in {time.perf_counter() - start:.1f} s, {step_out}" + (" (resumed)" if a.resume else "")


def _merge(args, out: Path, steps: list[str], state: _State) -> str:
    """OUT/index from the step atlases, merged afresh when one of them changed. language-neurons counts every
    layer; the index keeps the layers the other steps looked at."""
    from atlases import Atlas, load_atlas
    from atlases.cards import CardIndex, merge

    index_out = out / "index"
    sources = {step: _header(out / "steps" / step) for step in steps}
    before = state.data.get("index", {})
    if before.get("sources") == sources and before.get("atlas") is not None and before["atlas"] == _header(index_out):
        return f"index: up to date, {index_out}"
    atlases = {step: load_atlas(out / "steps" / step) for step in steps}
    layered = [a for s, a in atlases.items() if s in ("stats", "lm-head", "hftp", "milan")]
    layers = {site.split(".")[1] for a in layered for site in a.sites if site.startswith("blocks.")}
    lang = atlases.get("language-neurons")
    if lang is not None and layers:
        keep = [s for s in lang.sites if s.split(".")[1] in layers]
        atlases["language-neurons"] = Atlas(model=lang.model, revision=lang.revision, sites=keep, method=lang.method,
                                            tensors={k: v for k, v in lang.tensors.items() if k.split("/")[0] in keep},
                                            params=lang.params, meta=lang.meta)
    model = None
    if "brain-axes" in atlases:  # its adapters join as loadings on each neuron's write direction
        from cli.loading import load

        model = load(args)
    index = None
    for step, atlas in atlases.items():
        index = merge(index, atlas, str(out / "steps" / step), model)
    index.save(index_out)
    state.data["index"] = {"sources": sources, "atlas": _header(index_out)}
    state.save()
    cards = CardIndex.load(index_out).atlas
    return (f"index: wrote {index_out}, neuron cards of {cards.model} ({len(cards.sites)} layers) from "
            f"{', '.join(sorted(cards.params['sources']))}")
