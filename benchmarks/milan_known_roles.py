"""MILAN on neurons with known roles (issue 10's acceptance): does the PMI description agree with the
known role more often than the plain captioner argmax, and than descriptions of random neurons?

Known roles on smollm2-135m:
- language-specific neurons (issue 5's method on en/es/fr/de Bible counts), reference "Spanish" /
  "French" / "German" (the most selective specific neurons per language);
- concept neurons (issue 4's LM-head map: the neuron whose write direction gives the noun the
  highest probability), reference the noun.

Exemplars come from held-out Bible verses in the four languages plus the built-in demo corpus.
Each known neuron is paired with a random neuron of the same layer, scored against the same
reference. Prints the agreement table (MiniLM cosine, share with cosine ≥ 0.5, BLEU, ROUGE-L).

    .venv/bin/python benchmarks/milan_known_roles.py [--template chat|completion] [--beam 20] [--per-language 4] [--window 8]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

import interp
from interp.corpora import Document, demo_corpus
from probes.language_counts import bible_texts, language_counts
from probes.language_neurons import identify
from probes.lm_head import LMHeadOptions, lm_head_map, map_concept_neurons
from probes.milan import MilanSettings, exemplars_for, index_exemplars
from probes.milan_describe import ChatTemplate, LMDescriber, PromptTemplate, pmi_choice
from probes.milan_eval import agreement_table

LANGS = ["en", "es", "fr", "de"]
NAMES = {"es": "Spanish", "fr": "French", "de": "German"}
NOUNS = ["water", "city", "house", "king", "fire"]


def known_neurons(model: interp.Model, per_language: int) -> list[tuple[int, int, str]]:
    """[(layer, neuron, reference)]: language-specific and concept neurons."""
    counts, _ = language_counts(model, bible_texts(LANGS, limit=150))
    result = identify(counts)
    probs = counts.counts / counts.tokens.view(-1, 1, 1)  # [langs, layers, d_mlp] firing probability
    out = []
    for k, lang in enumerate(LANGS):
        if lang == "en":
            continue
        mine = result.masks[k] & result.specific
        others = torch.cat([probs[:k], probs[k + 1:]]).amax(0)
        selectivity = torch.where(mine, probs[k] - others, torch.tensor(-1.0))
        for flat in selectivity.flatten().topk(per_language).indices.tolist():
            out.append((flat // selectivity.shape[1], flat % selectivity.shape[1], NAMES[lang]))
    write = lm_head_map(model, None, LMHeadOptions(directions=("write",)))
    for noun in NOUNS:
        ids = model.tokenizer(" " + noun, add_special_tokens=False)["input_ids"]
        layer, neuron, _ = map_concept_neurons(model, write, ids, k=1)[0]
        out.append((layer, neuron, noun))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--template", default="completion", choices=["completion", "chat"])
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--per-language", type=int, default=4)
    p.add_argument("--lam", type=float, default=0.2)
    p.add_argument("--window", type=int, default=8, help="context tokens each side of the maximum (0: marks only)")
    args = p.parse_args()
    model = interp.load_model("smollm2-135m")
    t0 = time.time()
    known = known_neurons(model, args.per_language)
    rng = random.Random(0)
    randoms = [(layer, rng.randrange(model.adapter.d_mlp), ref) for layer, _, ref in known]
    held = bible_texts(LANGS, limit=60, offset=3000)
    docs = [Document(t, group=l) for l in LANGS for t in held[l]] + demo_corpus()
    settings = MilanSettings(beam=args.beam, lam=args.lam, window=args.window)
    sites = sorted({f"blocks.{l}.mlp.hook_post" for l, _, _ in known})
    index = index_exemplars(model, docs, sites, settings)
    template = ChatTemplate(model.tokenizer) if args.template == "chat" else PromptTemplate()
    describer = LMDescriber(model, template)
    rows = {"PMI (known roles)": ([], []), "argmax (known roles)": ([], []), "PMI (random neurons)": ([], []),
            "argmax (random neurons)": ([], [])}
    for kind, group in (("known roles", known), ("random neurons", randoms)):
        for layer, neuron, ref in group:
            ne = exemplars_for(model, index, f"blocks.{layer}.mlp.hook_post", [neuron], settings)[0]
            d = pmi_choice(describer, ne.texts(), lam=args.lam, beam=args.beam)
            for name, text in ((f"PMI ({kind})", d.text), (f"argmax ({kind})", d.argmax)):
                rows[name][0].append(text)
                rows[name][1].append(ref)
            print(f"{kind:14s} L{layer}:{neuron:<5d} ref {ref!r:10s} PMI {d.text!r:28s} argmax {d.argmax!r}")
    _, table = agreement_table(rows)
    print(f"\nsmollm2-135m, template {args.template}, λ = {args.lam}, beam {args.beam}, window {args.window} "
          f"({time.time() - t0:.0f} s)\n{table}")


if __name__ == "__main__":
    main()
