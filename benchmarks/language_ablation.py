"""Language-neuron ablations at full size (issue 5's acceptance): switching off a language's neurons hurts
that language most, on smollm2-135m and on gemma3-270m.

    make install-gemma && .venv/bin/python benchmarks/language_ablation.py [--no-write]

Per model: firing counts on 150 Bible verses per language (en, es, fr, de), the neurons of
`probes.language_neurons.identify`, then `steering.language.ablation_check` on 16 held-out verses
per language with 5 random-neuron draws. `tests/test_language_neurons.py` runs the smollm2 case at
test size (8 verses, 3 draws) on every `make test`; gemma3-270m takes about 10 minutes on one core,
so it lives here.

Goal per model: for at least 3 of the 4 languages, X's neurons off raise perplexity on X more than
on any other language and more than as many random neurons of the same layers.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TITLE = "## Language-neuron ablations (issue 5)"
LANGS = ["en", "es", "fr", "de"]
WINS = 3  # of 4 languages


def main() -> int:
    import interp
    from benchmarks.goals import Goals
    from benchmarks.results import publish
    from interp.models import OFFLINE_MODELS
    from probes.language_counts import bible_texts, language_counts
    from probes.language_neurons import identify
    from steering.language import ablation_check

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--verses", type=int, default=150, help="verses per language for the counts")
    p.add_argument("--held-out", type=int, default=16, help="held-out verses per language for the grid")
    p.add_argument("--draws", type=int, default=5, help="random-neuron draws per language")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    goals = Goals("language_ablation")
    sections = []
    for name in ("smollm2-135m", "gemma3-270m"):
        if not OFFLINE_MODELS[name].installed():
            goals.check(f"{name} is installed", "no", "make install-gemma", False)
            continue
        model = interp.load_model(name)
        counts, _ = language_counts(model, bible_texts(LANGS, limit=args.verses))
        check = ablation_check(model, identify(counts), bible_texts(LANGS, limit=args.held_out, offset=3000),
                               draws=args.draws)
        print(f"{name}\n{check.text()}", flush=True)
        sections.append(f"**{name}** ({check.wins()} of {len(LANGS)} languages hurt most by their own neurons):"
                        f"\n\n```\n{check.text()}\n```\n")
        won = ", ".join(l for l, w in zip(LANGS, check.won()) if w) or "none"
        goals.check(f"{name}: a language's neurons off hurt it most, and more than random neurons",
                    f"{check.wins()} of {len(LANGS)} ({won})", f"≥ {WINS} of {len(LANGS)}", check.wins() >= WINS)
    publish(TITLE, "\n".join([
        TITLE, "",
        f"Measured {datetime.date.today()} by `benchmarks/language_ablation.py`: counts on {args.verses} Bible "
        f"verses per language, the grid on {args.held_out} held-out verses, the median of {args.draws} random "
        "draws. Rows: neurons deactivated; columns: perplexity on.", "", *sections]), write=not args.no_write)
    return goals.finish()


if __name__ == "__main__":
    sys.exit(main())
