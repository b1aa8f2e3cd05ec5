"""Word onsets and word features for the MEG brain atlas (METHODS.md §G steps 1–2).

A words file is a TSV with a header: `onset` (seconds from the recording's start) and
`word`; an optional `recording` column names the recording a row belongs to (its file
stem; without it every recording heard the same words at the same times); any other
numeric column is a user feature (family = the column name up to its first "_", so
`pos_noun`, `pos_verb` form the family "pos").

Built-in features, each its own family: "frequency" (Zipf log frequency from `wordfreq`),
"function" (1 for a closed-class word of our list, else 0), "length" (log of the letter
count); see `interp.lexicon`. One more is built in but needs a model, so it is added to the
words before the atlas is built (`add_embedding_change`; `interp analyze --probe brain-axes
--embedding-change`): "embedding_change" (family "embedding"), the paper's embedding-change
feature computed from the loaded model (`embedding_change`, defined there).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from interp.errors import InterpError
from interp.lexicon import BUILT_IN, FUNCTION_WORDS, lexicon, normalise  # noqa: F401  (re-exported)



class WordsError(InterpError):
    """A words file that cannot be read or does not fit its recording."""


@dataclass
class Words:
    """One recording's words: onsets [n] (s, increasing) and the words; user features [n, F_user]."""

    onsets: np.ndarray
    words: list[str]
    user: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    user_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.onsets = np.asarray(self.onsets, dtype=float)
        if self.user.size == 0:
            self.user = np.zeros((len(self.words), 0))
        if len(self.onsets) != len(self.words) or self.user.shape[0] != len(self.words):
            raise WordsError("onsets, words and features differ in length")
        if len(self.words) < 2:
            raise WordsError("need at least two words")
        if np.any(np.diff(self.onsets) < 0):
            raise WordsError("word onsets must not decrease")


def read_words(path: str | Path) -> dict[str | None, Words]:
    """{recording stem or None: Words} from a TSV (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise WordsError(f"words file {path} does not exist")
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines(), delimiter="\t"))
    except UnicodeDecodeError:
        raise WordsError(f"{path} is not UTF-8 text") from None
    if not rows or not {"onset", "word"} <= set(rows[0]):
        raise WordsError(f"{path}: needs a header with the columns onset and word (tab-separated)")
    extra = [c for c in rows[0] if c not in ("onset", "word", "recording", "duration") and c]
    groups: dict[str | None, list[dict]] = {}
    for i, row in enumerate(rows, start=2):
        try:
            row["onset"] = float(row["onset"])
            values = [float(row[c]) for c in extra]
        except (TypeError, ValueError):
            raise WordsError(f"{path}:{i}: onset and feature columns must be numbers") from None
        if not math.isfinite(row["onset"]) or not all(map(math.isfinite, values)):
            raise WordsError(f"{path}:{i}: onset and features must be finite")
        row["values"] = values
        groups.setdefault(row.get("recording") or None, []).append(row)
    out = {}
    for rec, rs in groups.items():
        rs.sort(key=lambda r: r["onset"])
        out[rec] = Words(np.array([r["onset"] for r in rs]), [r["word"] for r in rs],
                         np.array([r["values"] for r in rs]).reshape(len(rs), len(extra)), list(extra))
    return out


def write_words(path: str | Path, words: Words) -> Path:
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["onset", "word", *words.user_names])
        for i, (t, word) in enumerate(zip(words.onsets, words.words)):
            w.writerow([f"{t:.4f}", word, *(f"{v:g}" for v in words.user[i])])
    return path


def family(name: str) -> str:
    return name.split("_", 1)[0]


def word_features(words: Words, families: Sequence[str] | None = None,
                  lang: str = "en") -> tuple[np.ndarray, list[str]]:
    """Features per word [n_words, F] and their names: the built-in families, then the user columns,
    restricted to `families` when given."""
    cols, names = [], []
    for kind in BUILT_IN:
        if families is None or kind in families:
            cols.append(lexicon(words.words, kind, lang))
            names.append(kind)
    for j, name in enumerate(words.user_names):
        if families is None or family(name) in families:
            cols.append(words.user[:, j])
            names.append(name)
    if not cols:
        raise WordsError(f"no features left (families {list(families or [])})")
    return np.stack(cols, axis=1), names


EMBEDDING_CHANGE = "embedding_change"  # the model-computed built-in feature's column name (family "embedding")


def embedding_change(model, words: Sequence[str], *, layers: Sequence[int] | None = None, chunk: int = 48,
                     batch_size: int = 4) -> np.ndarray:
    """The embedding-change feature of a heard word stream, from the model's own hidden states: [n_words].

    The words are read in order, in consecutive chunks of `chunk` words (each chunk one forward pass,
    the words joined by spaces). Word t's contextual embedding e_t is its hidden state
    `blocks.{l}.hook_resid_post` averaged over the word's tokens and over `layers` (default: every
    layer, as the dataset's GPT word embeddings the paper used average their layers). The feature is
    ‖e_t − e_{t−1}‖₂, the change of the embedding from the word before, in the stream's order across
    chunk boundaries; the first word takes the second's value (as the paper's public code does).
    Offline and deterministic: the model in eval mode, no sampling."""
    import torch

    import interp
    from interp.batching import pool_words

    words = list(words)
    if len(words) < 2:
        raise WordsError("the embedding change needs at least two words")
    layers = list(range(model.adapter.n_layers)) if layers is None else list(layers)
    sites = [f"blocks.{l}.hook_resid_post" for l in layers]
    chunks = [words[i:i + chunk] for i in range(0, len(words), chunk)]
    emb = []
    with torch.inference_mode():
        for b in range(0, len(chunks), batch_size):
            group = chunks[b:b + batch_size]
            batch = interp.tokenize(model.tokenizer, [" ".join(c) for c in group], words=True,
                                    max_length=16 * chunk)
            cache = interp.run_with_cache(model, batch, sites)
            for i, c in enumerate(group):
                ids = batch.word_ids[i]
                if int(ids.max()) + 1 != len(c):
                    raise WordsError(f"tokenisation lost words in chunk {b + i} ({int(ids.max()) + 1} of {len(c)})")
                pooled = [pool_words(cache[s][i].float().cpu(), ids, len(c)) for s in sites]
                emb.append(torch.stack(pooled).mean(0).double().numpy())
    e = np.concatenate(emb)
    diff = np.linalg.norm(np.diff(e, axis=0), axis=1)
    return np.concatenate([diff[:1], diff])


def with_feature(words: Words, name: str, values: np.ndarray) -> Words:
    """`words` with one more user feature column (replacing a column of that name)."""
    values = np.asarray(values, dtype=float).reshape(-1)
    if len(values) != len(words.words):
        raise WordsError(f"feature {name!r} has {len(values)} values for {len(words.words)} words")
    keep = [j for j, n in enumerate(words.user_names) if n != name]
    user = np.concatenate([words.user[:, keep], values[:, None]], axis=1)
    return Words(words.onsets, list(words.words), user, [words.user_names[j] for j in keep] + [name])


def add_embedding_change(model, words: dict, **kw) -> dict:
    """{recording: Words} with the "embedding_change" column computed from `model` (see `embedding_change`)."""
    return {rec: with_feature(w, EMBEDDING_CHANGE, embedding_change(model, w.words, **kw)) for rec, w in words.items()}
