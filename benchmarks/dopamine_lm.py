"""Dopamine gates on smollm2-135m (issue 11): a "continue in Spanish" mode, against ActAdd and LoRA.

    .venv/bin/python benchmarks/dopamine_lm.py [--target es] [--steps 80] [--no-write]

Gates (τ, g per MLP neuron, every layer) and LoRA (rank 4 on every down_proj, peft) train on
the same code-switched Bible examples (English first half, target second half) for the same
steps and batch; ActAdd adds the target-minus-English contrast of 32 parallel verses at the
middle layer's residual stream. Scored on the held-out neutral English prompts
(`steering.language_eval`): target share, perplexity under the unsteered model. Written to RESULTS.md.
Goal (issue 11): the hard gates raise the target-language share by at least 0.5 over the unsteered model.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TITLE = "## Dopamine on smollm2-135m (issue 11)"
GOAL_SHIFT = 0.5  # issue 11: the gates move the mode metric (target-language share) beyond the frozen model


def main() -> int:
    import interp
    from benchmarks.goals import Goals
    from benchmarks.results import publish
    from interp.corpora import bible_parallel
    from steering.actadd import actadd
    from steering.dopamine_lm import LmGateSettings, code_switch_examples, train_lm_gates, train_lm_lora
    from steering.language_eval import evaluate
    from steering.neutral_prompts import NEUTRAL

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="es")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    model = interp.load_model("smollm2-135m")
    examples = code_switch_examples(args.target, 256)
    settings = LmGateSettings(steps=args.steps)
    t = time.perf_counter()
    gates = train_lm_gates(model, examples, settings, progress=True)
    t_gates = time.perf_counter() - t
    t = time.perf_counter()
    lora, lora_params = train_lm_lora(model, examples, settings)
    t_lora = time.perf_counter() - t
    par = bible_parallel(["en", args.target], limit=32)
    pos, neg = [d.text for d in par[args.target]], [d.text for d in par["en"]]
    site = f"blocks.{model.adapter.n_layers // 2}.hook_resid_pre"
    variants = [("Dopamine gates (hard)", None, gates.edits()), (f"LoRA r={settings.lora_rank}", None, lora)]
    variants += [(f"ActAdd ({site})", s, actadd(model, pos, neg, site, s, skip_first=True)) for s in (1.0, 2.0, 4.0)]
    table = evaluate(model, variants, args.target, NEUTRAL["en"], NEUTRAL[args.target])
    print(table.text())
    closed = sum(int((g.threshold > 0).sum()) for g in gates.gates.values())
    text = "\n".join([
        TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/dopamine_lm.py`: the mode \"continue English text in "
        f"{args.target}\", {len(examples)} code-switched Bible verses. Gates and LoRA train {settings.steps} steps of "
        f"{settings.batch_size} examples each (gates: Adam {settings.lr}, T annealed {settings.temperature} → "
        f"{settings.final_temperature} × each site's std; LoRA: Adam {settings.lora_lr}). Scored on the 16 held-out "
        "neutral English prompts (greedy, 32 tokens, repetition penalty 1.3); perplexity under the unsteered model, "
        "and its ratio to the model's own continuations of the translated prompts (matched).",
        "", "```", table.text(), "```", "",
        f"Trainable parameters: gates {gates.parameters} ({gates.parameters // model.adapter.n_layers} per layer), "
        f"LoRA {lora_params}; ActAdd none (one vector). Training time on this CPU: gates {t_gates:.0f} s, "
        f"LoRA {t_lora:.0f} s. Loss: gates {gates.losses[0]:.2f} → {gates.losses[-1]:.2f}. "
        f"Neurons whose hard threshold is above zero (they only pass positive activations above τ): {closed}.",
    ])
    publish(TITLE, text, write=not args.no_write)
    goals = Goals("dopamine_lm")
    gated = next(r for r in table.rows if r.name == variants[0][0])
    goals.at_least(f"{args.target} share: hard gates − unsteered model", gated.share - table.unsteered.share, GOAL_SHIFT)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
