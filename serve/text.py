"""Token ids → text as a request advances: decoded whole each time, stop strings cut, partial characters held.

A stream must never send text it later has to take back: the tail that could still grow into a stop
string, and an incomplete UTF-8 character (decoded as U+FFFD), wait for the next token.
"""

from __future__ import annotations


class TextAssembler:
    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.sent = ""

    def update(self, tokens: list[int], *, final: bool) -> tuple[str, bool]:
        """(text not sent before, whether a stop string ended the request) for all tokens so far."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        stopped = bool(cuts)
        if stopped:
            text = text[: min(cuts)]
        elif not final:
            text = text.rstrip("\ufffd")
            text = text[: max(len(self.sent), len(text) - self.hold)]
        if not text.startswith(self.sent):  # a later token re-spelled earlier text: send only what is new
            common = 0
            while common < min(len(text), len(self.sent)) and text[common] == self.sent[common]:
                common += 1
            self.sent = self.sent[:common]
        delta, self.sent = text[len(self.sent):], text
        return delta, stopped
