"""`--paper` (each method's published choices where ours differ) and the README's table of those choices, generated
from the settings classes so that it cannot drift from the code.

    python -m cli.paper            # print the table
    python -m cli.paper --write    # rewrite it in README.md, between the paper-choices markers
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- paper-choices: begin (python -m cli.paper --write) -->", "<!-- paper-choices: end -->"
HELP = ("the paper's choices where our defaults differ (README: 'Paper mode'); recorded in the output's provenance")


def settings_classes() -> list[tuple[str, str, type]]:
    """(method, where the choice is made, settings class) for every method with settings."""
    from atlases.brain import BrainAtlasSettings
    from probes.foxp2 import Foxp2Settings
    from probes.hftp.run import HftpSettings
    from probes.language_neurons import LanguageNeuronSettings
    from probes.shared_neurons import SharedSettings
    from steering.axes import AxisSteerSettings
    from steering.snrf import SnrfSettings

    return [("Language neurons", "`analyze --probe language-neurons`", LanguageNeuronSettings),
            ("Neural FOXP2", "`analyze --probe foxp2`, `steer foxp2`", Foxp2Settings),
            ("HFTP", "`analyze --probe hftp`", HftpSettings),
            ("Brain axes", "`analyze --probe brain-axes`", BrainAtlasSettings),
            ("Brain axes (steering)", "`steer brain-axis`", AxisSteerSettings),
            ("Shared neurons", "`analyze --probe shared-neurons`, `steer snrf`", SharedSettings),
            ("SNRF", "`steer snrf`, `analyze --probe shared-neurons --snrf-beta`", SnrfSettings)]


def add_option(parser) -> None:
    parser.add_argument("--paper", action="store_true", help=HELP)


def apply(settings, args):
    """`settings` with the paper's choices when the command was given --paper."""
    return settings.as_paper() if getattr(args, "paper", False) else settings


def _cell(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return f"`{text}`"


def table() -> str:
    """Markdown: method × choice × our default × the paper's × why we differ × measured effect."""
    rows = ["| method | choice | ours | paper | why we differ | measured effect of the difference |",
            "|---|---|---|---|---|---|"]
    for method, where, cls in settings_classes():
        for c in cls.paper_choices():
            cells = [f"{method} ({where})", f"`{cls.__name__}.{c.setting}`", _cell(c.ours), _cell(c.paper), c.why,
                     c.effect]
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def readme_section(text: str) -> str:
    """The table as the README holds it (between the markers)."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} section")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    args = ap.parse_args(argv)
    new = table()
    if not args.write:
        print(new)
        return 0
    from interp.cache import write_text_atomic

    text = README.read_text(encoding="utf-8")
    old = readme_section(text)
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    write_text_atomic(README, before + BEGIN + "\n" + new + "\n" + END + after)
    print("README.md: the paper-choices table is " + ("unchanged" if old == new else "rewritten"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
