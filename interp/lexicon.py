"""Word-level lexica every layer can use: normalised word keys, Zipf log frequency (`wordfreq`),
function/content, length.

The list of function words is ours: determiners, pronouns, prepositions, conjunctions,
auxiliaries and particles of English (with the KJV's archaic forms).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .errors import InterpError

FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every no none all both either neither such what which whose
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself
we us our ours ourselves they them their theirs themselves thee thou thy thine ye who whom whoever whatever
one ones other another
of in on at by for with without to from into onto upon over under above below between among through during
before after since until till about against along around across behind beyond near off out up down within
toward towards unto per via than as like
and or but nor so yet if then else because although though while whereas whether unless lest
am is are was were be been being have has had having do does did done shall should will would may might
can could must ought hath doth art wast
not never also too very just only even still again ever here there where when why how now thus hence
therefore
""".split())

BUILT_IN = ("frequency", "function", "length")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)


def normalise(word: str) -> str:
    """Lower-case letters of a word ('"Lord,' → 'lord'); '' when it has none."""
    found = _WORD.findall(word.lower())
    return found[0] if found else ""


def lexicon(words: Sequence[str], kind: str, lang: str = "en") -> np.ndarray:
    """One built-in lexical value per word: "frequency" (Zipf), "function" (0/1) or "length"."""
    from wordfreq import zipf_frequency

    norm = [normalise(w) for w in words]
    if kind == "frequency":
        return np.array([zipf_frequency(w, lang) if w else 0.0 for w in norm])
    if kind == "function":
        return np.array([float(w in FUNCTION_WORDS) for w in norm])
    if kind == "length":
        return np.log(np.array([max(len(w), 1) for w in norm], dtype=float))
    raise InterpError(f"unknown lexicon {kind!r}; built in: {', '.join(BUILT_IN)}")
