"""`interp steer dopamine --train MODE.jsonl --out RECIPE`: train Dopamine gates for a mode.

Trains a threshold and a gain per MLP neuron (`steering.dopamine_lm`) on the mode's examples,
hardens them, and writes them as a recipe of `Gate` edits; `interp steer --recipe RECIPE`
applies it later. With --prompt, the trained gates steer those prompts right away.
MODE.jsonl holds one {"prompt": ..., "completion": ...} per line; `switch:LANG` builds the
"continue English text in LANG" mode from the parallel Bible instead.
"""

from __future__ import annotations

import argparse
import math

from interp.errors import InterpError
from cli.argtypes import finite, positive

SITES = {"post": "mlp.hook_post", "pre": "mlp.hook_pre"}  # --gate-site → the per-layer site name


def add_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--train", metavar="MODE.jsonl|switch:LANG",
                       help="dopamine: the mode's examples ({\"prompt\", \"completion\"} per line), or switch:es "
                            "for English text continued in Spanish (parallel Bible)")
    group.add_argument("--out", metavar="RECIPE", help="dopamine: where to write the trained gates (.safetensors)")
    group.add_argument("--gate-layers", metavar="LAYERS", help="dopamine: layers whose MLP neurons get gates "
                       "(default: all)")
    group.add_argument("--gate-steps", type=positive, default=80, metavar="N", help="dopamine: training steps (default 80)")
    group.add_argument("--gate-lr", type=finite, default=0.02, metavar="LR", help="dopamine: Adam step (default 0.02)")
    group.add_argument("--gate-site", choices=sorted(SITES), default="post",
                       help="dopamine: where the gates sit on the MLP neurons: post (default: the activation "
                            "act(gate)·up, mlp.hook_post) or pre (the pre-activation, mlp.hook_pre); the paper "
                            "does not say")


def check(args) -> None:
    """Fail before any model loads."""
    from pathlib import Path

    from steering.dopamine_lm import read_mode

    if not args.train or not args.out:
        raise InterpError("interp steer dopamine needs --train MODE.jsonl (or switch:LANG) and --out RECIPE")
    if args.gate_steps < 1 or not (math.isfinite(args.gate_lr) and args.gate_lr > 0):
        raise InterpError("--gate-steps must be at least 1 and --gate-lr a positive number")
    out = Path(args.out)
    if out.exists() and not out.is_file():
        raise InterpError(f"--out {out} is a folder; give a file name, e.g. mode.safetensors")
    if args.train.startswith("switch:"):
        from interp.corpora import bible_target

        bible_target(args.train.split(":", 1)[1], f"--train {args.train}")
        args._mode = None
    else:
        args._mode = read_mode(args.train)


def train_edits(args, model, notes: list[str]) -> list:
    """Train the gates, write the recipe, and return its edits."""
    from pathlib import Path

    from cli.runs import output_lock
    from interp.recipes import save_recipe
    from steering.dopamine_lm import LmGateSettings, code_switch_examples, train_lm_gates

    examples = args._mode if args._mode is not None else code_switch_examples(args.train.split(":", 1)[1])
    layers = model.adapter.parse_layers(args.gate_layers) if args.gate_layers else None
    settings = LmGateSettings(layers=layers, steps=args.gate_steps, lr=args.gate_lr,
                              site=SITES[getattr(args, "gate_site", "post")])
    with output_lock(Path(args.out)):  # one training writes this recipe at a time
        trained = train_lm_gates(model, examples, settings, progress=True)
        edits = trained.edits()
        provenance = {"writer": "dopamine", "mode": args.train, "examples": len(examples), "steps": settings.steps,
                      "lr": settings.lr, "layers": layers if layers is not None else "all", "site": settings.site,
                      "final_loss": trained.losses[-1]}
        save_recipe(args.out, edits, model, provenance)
    notes.append(f"dopamine gates on {len(edits)} layer(s), {trained.parameters} parameters, trained {settings.steps} "
                 f"steps on {len(examples)} examples (loss {trained.losses[0]:.2f} -> {trained.losses[-1]:.2f}); "
                 f"recipe written to {args.out}")
    return edits
