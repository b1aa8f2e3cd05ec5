"""Which language a text is in: Lingua (`lingua-language-detector`, models shipped in the wheel, no pickle).

Used to score generations (does steering make the model answer in Spanish?).
A detector is built once per set of candidate languages (ISO 639-1 codes) and
cached; restricting the candidates makes it fast and more accurate.
"""

from __future__ import annotations

import functools
from typing import Sequence

from .errors import InterpError

# ISO 639-1 code → English name, for the languages the bundled corpora and atlases use
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "it": "Italian", "pt": "Portuguese",
                  "de": "German", "ar": "Arabic", "zh": "Chinese", "ja": "Japanese", "ru": "Russian", "pl": "Polish",
                  "ro": "Romanian", "hi": "Hindi", "bn": "Bengali", "tr": "Turkish", "sw": "Swahili", "ko": "Korean",
                  "fa": "Persian", "id": "Indonesian", "vi": "Vietnamese", "uk": "Ukrainian", "tl": "Tagalog"}


@functools.lru_cache(maxsize=8)
def _detector(codes: tuple[str, ...]):
    from lingua import IsoCode639_1, LanguageDetectorBuilder, Language

    langs = []
    for code in codes:
        try:
            langs.append(Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())))
        except (AttributeError, ValueError):
            raise InterpError(f"language id: unknown ISO 639-1 code {code!r}") from None
    if len(langs) < 2:
        raise InterpError("language id needs at least two candidate languages")
    return LanguageDetectorBuilder.from_languages(*langs).with_preloaded_language_models().build()


def identify_language(texts: Sequence[str], candidates: Sequence[str]) -> list[str | None]:
    """The most likely candidate language (ISO 639-1) of each text; None where Lingua cannot tell."""
    det = _detector(tuple(sorted({c.lower() for c in candidates})))
    out = []
    for text in texts:
        lang = det.detect_language_of(text) if text.strip() else None
        out.append(None if lang is None else lang.iso_code_639_1.name.lower())
    return out


def language_share(texts: Sequence[str], lang: str, candidates: Sequence[str]) -> float:
    """Fraction of `texts` identified as `lang`."""
    if not texts:
        raise InterpError("language share of no texts")
    ids = identify_language(texts, candidates)
    return sum(i == lang for i in ids) / len(ids)
