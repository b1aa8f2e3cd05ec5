"""Turning (document, position) exemplars back into highlighted text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exemplar:
    value: float
    doc: int
    pos: int
    left: str
    token: str
    right: str

    def highlighted(self, mark: str = "[[{}]]") -> str:
        return self.left + mark.format(self.token) + self.right


def token_context(tokenizer, text: str, pos: int, *, window: int = 8, max_length: int = 512) -> tuple[str, str, str]:
    """Split `text` around its token number `pos`: (left context, token, right context).

    Tokenizes exactly as capture does (same special tokens and truncation),
    so positions recorded by `TopK` land on the same token.
    """
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    if not 0 <= pos < len(ids):
        raise IndexError(f"position {pos} outside the document's {len(ids)} tokens")
    dec = lambda part: tokenizer.decode(part, skip_special_tokens=False)  # noqa: E731
    return dec(ids[max(0, pos - window) : pos]), dec(ids[pos : pos + 1]), dec(ids[pos + 1 : pos + 1 + window])
