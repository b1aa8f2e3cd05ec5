"""How fast MILAN describes one neuron (issue 10): interp's describers against the plain transformers way.

The job: one neuron's exemplars → candidate descriptions by beam search under p(d | E) (beam 20,
at most 15 tokens) → every candidate scored exactly under p(d | E) and p(d) → the PMI choice.

| job | what runs |
| --- | --- |
| (a) | `pmi_choice(LMDescriber(model), …)`: the ~500-token prompt runs once; its KV cache is shared by all beams and by the scoring of every candidate |
| (b) | the plain way with transformers: `model.hf.generate(num_beams=20, num_return_sequences=20)` on the prompt, then each candidate scored by a teacher-forced pass of prompt + candidate (a batch for p(d | E), a batch for p(d)) |
| (c) | `pmi_choice(TrainedDescriber(...), …)`: the learned captioner (MiniLM codes of the exemplars, a GRU decoder), the default describer |

smollm2-135m in fp32, exemplars of real layer-20 neurons from the built-in demo corpus (window
8), each job once per neuron in rotating order after a warm-up; median seconds per neuron and
the ratio to (a). (a) and (b) share the prompt, the barred tokens, the ranking of beams by
whole-string log-probability (`length_penalty=0`) and the scoring rule; their stopping rules
differ slightly, so the table also gives how many of (b)'s candidates (a) found.

    .venv/bin/python benchmarks/milan_describe.py [--neurons 6] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import interp  # noqa: E402
from benchmarks.goals import Goals  # noqa: E402
from benchmarks.results import publish  # noqa: E402
from interp.corpora import demo_corpus  # noqa: E402
from probes.milan import MilanSettings, exemplars_for, index_exemplars  # noqa: E402
from probes.milan.annotations import AnnotationSettings  # noqa: E402
from probes.milan.captioner import TrainedDescriber, trained_captioner  # noqa: E402
from probes.milan.describe import LMDescriber, pmi_choice  # noqa: E402

TITLE = "## MILAN describer speed (issue 10)"
BEAM, MAX_TOKENS, LAM = 20, 15, 0.2
GOAL_SPEEDUP = 10.0  # README: (a) describes a neuron 12× faster than (b); the goal leaves room for noise
GOAL_FOUND = 0.8  # ... on the same search: (a) finds most of (b)'s candidates


@torch.inference_mode()
def plain_transformers(model: interp.Model, lm: LMDescriber, exemplars: list[str]) -> tuple[str, list[str]]:
    """(b): beam search by `generate`, then full teacher-forced passes to score each candidate → (PMI choice,
    candidates)."""
    tok = model.tokenizer
    prompt = tok(lm.template.captioner(exemplars), return_tensors="pt")
    out = model.hf.generate(**prompt, num_beams=BEAM, num_return_sequences=BEAM, max_new_tokens=MAX_TOKENS,
                            eos_token_id=lm.newline, pad_token_id=tok.pad_token_id or lm.newline, do_sample=False,
                            length_penalty=0.0, early_stopping=True,  # whole-string log-probs, as (a) ranks them
                            bad_words_ids=[[i] for i in lm.barred])  # (a)'s barred tokens: other line breaks, EOS
    n = prompt["input_ids"].shape[1]
    cands = list(dict.fromkeys(t.split("\n")[0].strip() for t in tok.batch_decode(out[:, n:], skip_special_tokens=True)))
    cands = [c for c in cands if c]
    cap = _teacher_forced(model, lm, lm.template.captioner(exemplars), cands)
    pri = _teacher_forced(model, lm, lm.template.prior(), cands)
    best = int((cap - LAM * pri).argmax())
    return cands[best], cands


def _teacher_forced(model: interp.Model, lm: LMDescriber, prompt: str, cands: list[str]) -> torch.Tensor:
    """[n] log p(candidate + closing token | prompt), each row the whole prompt again (right-padded)."""
    tok = model.tokenizer
    p = tok(prompt)["input_ids"]
    rows = [p + tok(" " + c, add_special_tokens=False)["input_ids"] + [lm.newline] for c in cands]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), lm.newline)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    lp = torch.log_softmax(model.hf(input_ids=ids).logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None])[..., 0]
    keep = torch.tensor([[len(p) - 1 <= j < len(r) - 1 for j in range(width - 1)] for r in rows])
    return (lp * keep).sum(1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--neurons", type=int, default=6)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    model = interp.load_model("smollm2-135m", dtype=torch.float32)
    settings = MilanSettings(window=8)
    site = "blocks.20.mlp.hook_post"
    index = index_exemplars(model, demo_corpus(), [site], settings)
    units = torch.randperm(model.adapter.d_mlp, generator=torch.Generator().manual_seed(0))[: args.neurons].tolist()
    neurons = [ne.texts() for ne in exemplars_for(model, index, site, units, settings)]
    lm = LMDescriber(model)
    learned = TrainedDescriber(trained_captioner(model.tokenizer, AnnotationSettings(window=settings.window)))
    def ours(describer):
        def job(ex):
            d = pmi_choice(describer, ex, lam=LAM, beam=BEAM, max_tokens=MAX_TOKENS)
            return d.text, d.candidates
        return job

    jobs = {  # each → (PMI choice, candidates)
        "(a) interp LMDescriber, shared prompt cache": ours(lm),
        "(b) transformers generate(num_beams) + teacher-forced scoring": lambda ex: plain_transformers(model, lm, ex),
        "(c) interp learned captioner (default describer)": ours(learned),
    }
    names = list(jobs)
    for name in names:  # warm-up (and the prior prompt's cache, shared by every neuron)
        jobs[name](neurons[0])
    times = {n: [] for n in names}
    found, same = [], 0
    for i, ex in enumerate(neurons):
        got = {}
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            got[name] = jobs[name](ex)
            times[name].append(time.perf_counter() - t0)
        (a_text, a_cands), (b_text, b_cands) = got[names[0]], got[names[1]]
        found.append(sum(c in a_cands for c in b_cands) / max(len(b_cands), 1))
        same += a_text == b_text
    med = {n: statistics.median(times[n]) for n in names}
    rows = [f"| {n} | {med[n]:.2f} | {med[n] / med[names[0]]:.2f} |" for n in names]
    text = "\n".join([
        TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/milan_describe.py`, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads: smollm2-135m fp32, {len(neurons)} random layer-20 neurons, their "
        f"{settings.k} exemplars from the demo corpus (window {settings.window}; prompt "
        f"~{len(model.tokenizer(lm.template.captioner(neurons[0]))['input_ids'])} tokens), beam {BEAM}, at most "
        f"{MAX_TOKENS} tokens, λ = {LAM}. Median seconds per neuron (candidates, exact scores, PMI choice), "
        "each job once per neuron in rotating order after a warm-up.", "",
        "| job | s / neuron | × (a) |", "|---|---|---|", *rows, "",
        f"(a) found {statistics.mean(found):.0%} of (b)'s candidates (mean over neurons; the same search of "
        f"p(d | E), with slightly different stopping rules), and (a) and (b) chose the same description for "
        f"{same} of {len(neurons)} neurons.",
    ])
    publish(TITLE, text, write=not args.no_write)
    goals = Goals("milan_describe")
    goals.at_least("describing a neuron: (b) plain transformers time / (a) LMDescriber time", med[names[1]] / med[names[0]],
                   GOAL_SPEEDUP, fmt=".1f")
    goals.at_least("the same search: share of (b)'s candidates that (a) finds", statistics.mean(found), GOAL_FOUND)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
