"""Paper mode: each method's published choices, where ours differ, behind one switch (issue 30).

A method's settings dataclass subclasses `PaperSettings` and marks each field whose default differs from its
paper (or from the paper's public code, whose published numbers came from it) with `differs`:

    null_control: bool = differs(True, paper=False, why="the self z-score marks the top few per cent of any data",
                                 effect="a shuffled control gets as many 'syntax neurons' (RESULTS.md)")

`Settings.paper(**overrides)` gives the settings with every marked field at the paper's value;
`Settings.paper_choices()` lists them (`Choice`), for the README's table (generated, so it cannot drift from the
code: `python -m cli.paper_table --write`); `settings.provenance()` records in an atlas or a recipe which value
each marked choice had and whether the run was the paper's.
"""

from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

S = TypeVar("S", bound="PaperSettings")


@dataclass(frozen=True)
class Choice:
    """One setting where our default differs from the paper's choice, and why."""

    setting: str
    ours: Any
    paper: Any
    why: str
    effect: str


def differs(default: Any, *, paper: Any, why: str, effect: str = "not measured") -> Any:
    """A dataclass field whose default (`default`) is not the paper's (`paper`); `why` we differ and the measured
    `effect` of the difference go to the README's table. Lists and dicts are copied per instance."""
    meta = {"paper": paper, "why": why, "effect": effect}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _default(f) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


class PaperSettings:
    """Mixin for a method's settings dataclass: `paper()`, `as_paper()`, `paper_choices()`, `provenance()`."""

    @classmethod
    def paper_choices(cls) -> list[Choice]:
        assert is_dataclass(cls), f"{cls.__name__} must be a dataclass"
        return [Choice(f.name, _default(f), f.metadata["paper"], f.metadata["why"], f.metadata["effect"])
                for f in fields(cls) if "paper" in f.metadata]

    @classmethod
    def paper(cls: type[S], **overrides: Any) -> S:
        """These settings with every marked choice at the paper's value (`overrides` win)."""
        values = {c.setting: copy.deepcopy(c.paper) for c in cls.paper_choices()}
        return cls(**{**values, **overrides})

    def as_paper(self: S) -> S:
        """These settings with every marked choice switched to the paper's value (the others kept)."""
        return replace(self, **{c.setting: copy.deepcopy(c.paper) for c in self.paper_choices()})

    def is_paper(self) -> bool:
        """True when every marked choice has the paper's value."""
        return all(getattr(self, c.setting) == c.paper for c in self.paper_choices())

    def provenance(self) -> dict:
        """{"paper": every marked choice at the paper's value?, "choices": {setting: value}} for an atlas or a
        recipe (JSON-ready)."""
        return {"paper": self.is_paper(), "choices": {c.setting: _jsonable(getattr(self, c.setting))
                                                      for c in self.paper_choices()}}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
