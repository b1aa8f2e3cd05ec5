"""Tokenized batches with the masks statistics need.

A `Batch` carries, beside input ids and the attention mask, which tokens
count (`mask`: not padding, not prompt), which document and group each row
comes from, each token's position inside its document and, when asked, the
word each token belongs to (via character offsets).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from .errors import CorpusError

WORD_RE = re.compile(r"\S+")


@dataclass
class Batch:
    input_ids: torch.Tensor  # [batch, seq]
    attention_mask: torch.Tensor  # [batch, seq], 1 for real tokens
    mask: torch.Tensor  # [batch, seq] bool, tokens that count (not padding, not prompt)
    positions: torch.Tensor  # [batch, seq] position of each token in its document
    doc_index: torch.Tensor  # [batch] index of the document in the corpus
    group_index: torch.Tensor  # [batch] index into the run's group list
    word_ids: torch.Tensor | None = None  # [batch, seq] word number in the document, -1 if none
    memo: tuple | None = field(default=None, repr=False)  # reducers' shared flattening of one site

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())


def _word_ids(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """Word number (whitespace-separated words) of each token, -1 for none."""
    spans = [m.span() for m in WORD_RE.finditer(text)]
    starts, ends = [a for a, _ in spans], [b for _, b in spans]
    out, w = [], 0
    for a, b in offsets:
        c = next((i for i in range(a, b) if not text[i].isspace()), None)
        if c is None or a == b:
            out.append(-1)
            continue
        while w < len(starts) and ends[w] <= c:
            w += 1
        out.append(w if w < len(starts) and starts[w] <= c else -1)
    return out


@contextmanager
def padded_on(tokenizer, side: str | None) -> Iterator[None]:
    """Pad on `side` ("left" / "right"; None: the tokenizer's own) inside the block, then restore it."""
    old = tokenizer.padding_side
    tokenizer.padding_side = side or old
    try:
        yield
    finally:
        tokenizer.padding_side = old


def encode_left(tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """`input_ids` / `attention_mask` [batch, seq], left-padded, not truncated: position −1 is every text's
    next-token position (for generation and next-token probabilities)."""
    with padded_on(tokenizer, "left"):
        return dict(tokenizer(list(texts), return_tensors="pt", padding=True))


def tokenize(
    tokenizer,
    texts: Sequence[str],
    *,
    prompts: Sequence[str | None] | None = None,
    doc_index: Sequence[int] | None = None,
    group_index: Sequence[int] | None = None,
    max_length: int = 512,
    padding_side: str | None = None,
    words: bool = False,
) -> Batch:
    """Tokenize `texts` into a padded `Batch` (offsets give prompt and word masks)."""
    if not texts:
        raise CorpusError("empty batch: no texts to tokenize")
    with padded_on(tokenizer, padding_side):
        enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, return_offsets_mapping=True)
    attn = enc["attention_mask"]
    mask = attn.bool().clone()
    offsets = enc["offset_mapping"]
    if prompts is not None:
        for i, prompt in enumerate(prompts):
            if prompt:
                # a token is part of the prompt if it starts inside it
                in_prompt = (offsets[i, :, 0] < len(prompt)) & attn[i].bool()
                mask[i] &= ~in_prompt
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    n = len(texts)
    word_ids = None
    if words:
        word_ids = torch.full_like(attn, -1)
        for i, text in enumerate(texts):
            real = attn[i].bool()
            offs = [tuple(o) for o in offsets[i][real].tolist()]
            word_ids[i, real] = torch.tensor(_word_ids(text, offs), dtype=word_ids.dtype)
    return Batch(
        input_ids=enc["input_ids"],
        attention_mask=attn,
        mask=mask,
        positions=positions,
        doc_index=torch.as_tensor(doc_index if doc_index is not None else range(n), dtype=torch.long),
        group_index=torch.as_tensor(group_index if group_index is not None else [0] * n, dtype=torch.long),
        word_ids=word_ids,
    )


def without_first(mask: torch.Tensor) -> torch.Tensor:
    """A copy of an attention mask [batch, seq] without each row's first real token (either padding side).

    The first token is the attention sink: in many models its activations are orders of
    magnitude larger than elsewhere (smollm2 layer 11: norm ~2800 against ~7), so pooled
    statistics that include it measure the sink, not the text. Rows with one real token keep it.
    """
    out = mask.clone()
    keep_one = mask.sum(1) <= 1
    rows = torch.arange(mask.shape[0])[~keep_one]
    out[rows, mask.int().argmax(1)[~keep_one]] = 0
    return out


def pool_words(acts: torch.Tensor, word_ids: torch.Tensor, n_words: int) -> torch.Tensor:
    """[n_words, width]: each word's mean over its tokens' activations acts [seq, width].

    word_ids [seq] from `tokenize(..., words=True)` (−1: a token of no word); a word with no
    token gets a zero row (callers check that tokenisation kept every word).
    """
    keep = word_ids >= 0
    ids = word_ids[keep]
    sums = torch.zeros(n_words, acts.shape[-1], dtype=acts.dtype).index_add_(0, ids, acts[keep])
    return sums / torch.bincount(ids, minlength=n_words).clamp(min=1)[:, None]
