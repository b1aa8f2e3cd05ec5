"""MILAN out of distribution (issue 30): how often does the default captioner describe a neuron right when the
neuron's role is outside the categories it was trained on?

The default describer (`probes.milan.captioner`) is a closed-set labeller: a GRU over the words of the synthetic
annotations of `probes.milan.annotations` (22 languages, 24 word fields, 10 word classes), and
`benchmarks/milan_known_roles.py` checks it on roles from those same categories (its concept nouns water, city,
house, king, fire are all word fields). Here: smollm2-135m's LM-head concept neurons (`probes.lm_head`: the neuron
whose write direction gives the noun the highest probability, as in `probes.milan.known_roles`) for nouns in none
of its word fields (`OOD`, checked against every lexicon and description), with a random neuron of the same layer
each as a reference, described by the default captioner from held-out Bible and demo-corpus exemplars exactly as
in the known-roles check (λ = 0.2, beam 20, window 8).

Right, by a rule fixed before the run: the PMI description contains the noun or one of the words listed for it
in `OOD` (its category). Also reported: MiniLM cosine ≥ 0.5 to the noun (the known-roles check's rule), and
how many of each noun's right words the captioner can write at all (its vocabulary). No goal on the number:
the benchmark's one goal is that it ran and reported.

    .venv/bin/python benchmarks/milan_ood.py [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import interp  # noqa: E402
from benchmarks.goals import Goals  # noqa: E402
from benchmarks.results import publish  # noqa: E402
from probes.lm_head import LMHeadOptions, lm_head_map, map_concept_neurons  # noqa: E402
from probes.milan import MilanSettings  # noqa: E402
from probes.milan.annotations import CLASSES, LEXICONS  # noqa: E402
from probes.milan.captioner import END, START, TrainedDescriber, trained_captioner, words  # noqa: E402
from probes.milan.eval import embedding_similarity  # noqa: E402
from probes.milan.known_roles import KnownNeuron, describe_known, known_exemplars, random_partners  # noqa: E402

TITLE = "## MILAN out of distribution: concept neurons outside the captioner's categories (issue 30)"

# nouns in none of the captioner's word fields, and the words that make a description of one right (the noun,
# its plural, its category); fixed before the first run
OOD: dict[str, tuple[str, ...]] = {
    "computer": ("computer", "computers", "technology", "machine", "machines", "electronics"),
    "music": ("music", "musical", "song", "songs", "sound", "sounds", "instruments"),
    "school": ("school", "schools", "education", "teaching", "learning", "students"),
    "car": ("car", "cars", "vehicle", "vehicles", "transport", "driving"),
    "doctor": ("doctor", "doctors", "medicine", "medical", "health", "physician"),
    "book": ("book", "books", "reading", "writing", "literature"),
    "tree": ("tree", "trees", "plant", "plants", "forest", "wood"),
    "game": ("game", "games", "play", "playing", "sport", "sports"),
    "science": ("science", "scientific", "research", "knowledge"),
    "phone": ("phone", "phones", "telephone", "communication", "technology"),
    "paper": ("paper", "papers", "writing", "documents"),
    "engine": ("engine", "engines", "machine", "machines", "motor"),
}


def in_distribution_words() -> set[str]:
    """Every word of the captioner's word fields and class descriptions (its lexicons and annotations)."""
    out: set[str] = set()
    for descriptions, lexicon in LEXICONS.values():
        out |= set(lexicon.split())
        out |= {w for d in descriptions for w in words(d)}
    for descriptions, _ in CLASSES.values():
        out |= {w for d in descriptions for w in words(d)}
    return out


def right(description: str, noun: str) -> bool:
    return any(w in OOD[noun] for w in words(description))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--lam", type=float, default=0.2)
    p.add_argument("--window", type=int, default=8, help="context tokens each side of the maximum")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    inside = sorted(set(OOD) & in_distribution_words())
    if inside:
        raise SystemExit(f"not out of distribution: {', '.join(inside)} in the captioner's word fields")
    t0 = time.time()
    model = interp.load_model("smollm2-135m")
    write = lm_head_map(model, None, LMHeadOptions(directions=("write",)))
    neurons = []
    for noun in OOD:
        ids = model.tokenizer(" " + noun, add_special_tokens=False)["input_ids"]
        layer, unit, _ = map_concept_neurons(model, write, ids, k=1)[0]
        neurons.append(KnownNeuron("known roles", layer, unit, noun))
    neurons += random_partners(model, neurons)
    settings = MilanSettings(beam=args.beam, lam=args.lam, window=args.window)
    exemplars = known_exemplars(model, neurons, settings)
    captioner = trained_captioner(model.tokenizer, progress=True)  # the default captioner
    described = describe_known(TrainedDescriber(captioner), neurons, exemplars, settings)
    vocab = set(captioner.vocab) - {START, END}
    known = [n for n in described if n.kind == "known roles"]
    rand = [n for n in described if n.kind == "random neurons"]
    n = len(known)
    hits = {kind: sum(right(x.pmi, x.reference) for x in group) for kind, group in (("concept", known),
                                                                                    ("random", rand))}
    argmax_hits = sum(right(x.argmax, x.reference) for x in known)
    cos = embedding_similarity([x.pmi for x in described], [x.reference for x in described])
    cos_ok = {kind: sum(float(cos[i]) >= 0.5 for i, x in enumerate(described) if x.kind == k)
              for kind, k in (("concept", "known roles"), ("random", "random neurons"))}
    writable = {noun: [w for w in ws if w in vocab] for noun, ws in OOD.items()}
    rows = ["| noun | neuron | PMI description | argmax | right | cosine | right words the captioner can write |",
            "|---|---|---|---|---|---|---|"]
    for i, x in enumerate(known):
        rows.append(f"| {x.reference} | L{x.layer}:{x.unit} | {x.pmi} | {x.argmax} | "
                    f"{'yes' if right(x.pmi, x.reference) else 'no'} | {float(cos[i]):.2f} | "
                    f"{', '.join(writable[x.reference]) or 'none'} |")
    random_lines = [f"{x.reference:10s} L{x.layer}:{x.unit:<5d} PMI {x.pmi!r}" for x in rand]
    fraction = hits["concept"] / n
    text = "\n".join([
        TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/milan_ood.py` ({time.time() - t0:.0f} s): smollm2-135m, "
        f"the default captioner (clean synthetic annotations, seed 0; {len(vocab)} words in its vocabulary), "
        f"LM-head concept neurons (write direction) of {n} nouns in none of its word fields, exemplars from "
        f"held-out Bible verses and the demo corpus (window {args.window}), λ = {args.lam}, beam {args.beam}.",
        "",
        f"**Right (the description names the noun or a word of its category, rule fixed before the run): "
        f"{hits['concept']} of {n} ({fraction:.2f})**; the plain argmax: {argmax_hits} of {n}; random neurons of "
        f"the same layers under the same rule: {hits['random']} of {n}. MiniLM cosine ≥ 0.5 to the noun (the "
        f"known-roles check's rule): {cos_ok['concept']} of {n}, random neurons {cos_ok['random']} of {n}. "
        f"Of the {sum(len(v) for v in OOD.values())} right words, the captioner can write "
        f"{sum(len(v) for v in writable.values())}: a closed-set labeller names only the categories it was "
        "trained on.",
        "", *rows, "",
        "Random neurons (the same layers):", "", "```", *random_lines, "```",
    ])
    publish(TITLE, text, write=not args.no_write)
    goals = Goals("milan_ood")
    goals.check("ran and reported: OOD concept neurons described right (no target on the number)",
                f"{hits['concept']}/{n} = {fraction:.2f}", "reported", ok=True)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
