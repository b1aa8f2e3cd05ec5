"""MILAN's describer (Hernandez et al. 2022; METHODS.md §F steps 2–3): a description d of a neuron
that maximises pointwise mutual information with its exemplars E.

    PMI(d) = log p(d | E) − λ · log p(d)

- p(d | E), the captioner: a causal LM prompted with the highlighted exemplars;
- p(d), the prior: the same LM and prompt with no exemplars (a language model of
  descriptions alone);
- candidates: beam search under p(d | E) (beam 50, at most 15 tokens, a description ends at
  a newline), then reranked by PMI (λ = 0.2). `mode="per_step"` subtracts λ · log p(token |
  prefix) from every step of the beam search instead (the paper's other variant).

λ = 0 is the plain captioner argmax over the candidates. A description's probability always
includes its end (the newline), so "Spanish" and "Spanish words" compete as whole strings.

Scorers are pluggable: anything with `candidates(exemplars, beam, max_tokens, lam, mode)` and
`logprobs(exemplars | None, descriptions)` can replace `LMDescriber`.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

import interp
from interp.errors import InterpError

MODES = ("rerank", "per_step")


@dataclass
class PromptTemplate:
    """How exemplars become a prompt: a header, a few worked examples (shots), then the neuron's block.

    The shots teach the answer format only; their topics (numbers, commas, meals) are kept
    away from the roles the tests check (languages, concrete nouns).
    """

    header: str = ("Each block lists text excerpts where one neuron of a language model is most active; "
                   "the tokens where it fires are marked [[like this]]. A short description of what the "
                   "neuron detects follows each block.\n\n")
    shots: tuple[tuple[tuple[str, ...], str], ...] = (
        (("I paid [[twenty]] dollars for it", "after [[seven]] long years", "about [[three]] hundred people"),
         "numbers"),
        (("he stopped[[,]] and then", "apples[[,]] pears[[,]] and plums", "Yes[[,]] she said"), "commas"),
        (("we ate [[breakfast]] early", "a [[dinner]] party for", "after [[lunch]] they left"), "meals"),
    )
    block: str = "Excerpts:\n{excerpts}Description:"
    excerpt: str = "- {}\n"

    def _block(self, exemplars: Sequence[str]) -> str:
        return self.block.format(excerpts="".join(self.excerpt.format(e) for e in exemplars))

    def captioner(self, exemplars: Sequence[str]) -> str:
        """The prompt for p(d | E)."""
        shots = "".join(self._block(ex) + f" {d}\n\n" for ex, d in self.shots)
        return self.header + shots + self._block(exemplars)

    def prior(self) -> str:
        """The prompt for p(d): the same, with an empty block."""
        return self.captioner([])

    end: str = "\n"  # what closes a description


@dataclass
class ChatTemplate:
    """For instruction-tuned captioners: one user turn with the exemplars and a question, and the
    assistant's answer begun with `lead` (the description continues it, up to the end of the turn)."""

    tokenizer: object
    question: str = ("Here are text excerpts where one neuron of a language model is most active; the tokens "
                     "where it fires are marked [[like this]].\n{excerpts}What do the marked tokens have in "
                     "common? Answer in a few words.")
    lead: str = "They are"
    excerpt: str = "- {}\n"

    def _chat(self, exemplars: Sequence[str]) -> str:
        body = self.question.format(excerpts="".join(self.excerpt.format(e) for e in exemplars))
        chat = self.tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                                  add_generation_prompt=True)
        return chat + self.lead

    def captioner(self, exemplars: Sequence[str]) -> str:
        return self._chat(exemplars)

    def prior(self) -> str:
        return self._chat([])

    @property
    def end(self) -> str:
        return self.tokenizer.eos_token


@dataclass
class Description:
    """The chosen description and every candidate's scores (log p(d|E), log p(d), PMI)."""

    text: str
    pmi: float
    lam: float
    mode: str
    candidates: list[str] = field(default_factory=list)
    captioner: list[float] = field(default_factory=list)  # log p(d | E) per candidate
    prior: list[float] = field(default_factory=list)  # log p(d) per candidate

    @property
    def argmax(self) -> str:
        """The plain captioner argmax (λ = 0) over the same candidates."""
        return self.candidates[max(range(len(self.candidates)), key=self.captioner.__getitem__)]

    def to_json(self) -> dict:
        return {"text": self.text, "pmi": self.pmi, "lam": self.lam, "mode": self.mode, "argmax": self.argmax,
                "candidates": self.candidates, "captioner": self.captioner, "prior": self.prior}

    @classmethod
    def from_json(cls, rec: dict) -> "Description":
        """Back from `to_json` (the argmax is derived, not read)."""
        return cls(rec["text"], rec["pmi"], rec["lam"], rec["mode"], rec["candidates"], rec["captioner"], rec["prior"])


class Describer(Protocol):
    def candidates(self, exemplars: Sequence[str], *, beam: int, max_tokens: int, lam: float,
                   mode: str) -> list[str]: ...

    def logprobs(self, exemplars: Sequence[str] | None, descriptions: Sequence[str]) -> torch.Tensor: ...


def describer_identity(describer: Describer) -> str:
    """What a checkpoint records of the describer that wrote it: its `identity` attribute when it has
    one (the built-in describers do), else its class name."""
    return str(getattr(describer, "identity", type(describer).__name__))


def pmi_choice(describer: Describer, exemplars: Sequence[str], *, lam: float = 0.2, beam: int = 50,
               max_tokens: int = 15, mode: str = "rerank") -> Description:
    """argmax over the candidates of log p(d | E) − λ log p(d) (both scored exactly, whole strings)."""
    if mode not in MODES:
        raise InterpError(f"MILAN mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not exemplars:
        raise InterpError("MILAN needs at least one exemplar to describe a neuron")
    cands = describer.candidates(exemplars, beam=beam, max_tokens=max_tokens, lam=lam, mode=mode)
    if not cands:
        raise InterpError("the describer produced no candidate descriptions")
    cap = describer.logprobs(exemplars, cands)
    pri = describer.logprobs(None, cands) if lam else torch.zeros_like(cap)
    score = cap - lam * pri
    best = int(score.argmax())
    return Description(cands[best], float(score[best]), lam, mode, list(cands), cap.tolist(), pri.tolist())


class LMDescriber:
    """Captioner and prior from one causal LM (`interp.Model`), as METHODS.md suggests for text neurons."""

    def __init__(self, model: interp.Model, template: "PromptTemplate | ChatTemplate | None" = None) -> None:
        self.model = model
        self.template = template or PromptTemplate()
        tok = model.tokenizer
        self.newline = tok(self.template.end, add_special_tokens=False)["input_ids"][-1]  # the closing token
        # a description ends with the closing token only: other line breaks and the end of text are barred
        # inside one, so a beam's score is exactly the whole string's score (closing token included)
        self.barred = [i for t, i in tok.get_vocab().items() if "\n" in tok.convert_tokens_to_string([t])]
        self.barred = [i for i in {*self.barred, tok.eos_token_id} if i is not None and i != self.newline]
        template_hash = hashlib.sha256(repr(self.template).encode()).hexdigest()[:12]
        self.identity = (f"lm {model.name} ({model.source}@{model.revision or 'local'}, {model.dtype}), "
                         f"template {template_hash}")
        self._prior_prefix: tuple | None = None
        self._last: tuple[str, tuple] | None = None  # the last captioner prompt and its prefix

    # -- encoding ------------------------------------------------------------------------------
    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor([self.model.tokenizer(text)["input_ids"]], device=self.model.device)

    def _description_ids(self, d: str) -> list[int]:
        """A description as it follows the prompt: " d" and the closing token (newline, or end of turn)."""
        return self.model.tokenizer(" " + d.strip(), add_special_tokens=False)["input_ids"] + [self.newline]

    @torch.inference_mode()
    def _prefix(self, prompt: str) -> tuple:
        """(cache after the prompt, log-probs of the next token [vocab])."""
        out = self.model.hf(input_ids=self._ids(prompt), use_cache=True)
        return out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), -1)

    def _captioner(self, exemplars: Sequence[str]) -> tuple:
        prompt = self.template.captioner(exemplars)
        if self._last is None or self._last[0] != prompt:  # candidates, then scores: one prefix pass
            self._last = (prompt, self._prefix(prompt))
        return self._last[1]

    def _prior(self) -> tuple:
        if self._prior_prefix is None:
            self._prior_prefix = self._prefix(self.template.prior())
        return self._prior_prefix

    # -- scoring -------------------------------------------------------------------------------
    @torch.inference_mode()
    def logprobs(self, exemplars: Sequence[str] | None, descriptions: Sequence[str]) -> torch.Tensor:
        """[n]: log p(d | E) (or log p(d) when `exemplars` is None) of each whole description."""
        cache, first = self._captioner(exemplars) if exemplars is not None else self._prior()
        ids = [self._description_ids(d) for d in descriptions]
        n, width = len(ids), max(map(len, ids))
        batch = torch.full((n, width), self.newline, device=self.model.device)
        for i, row in enumerate(ids):
            batch[i, :len(row)] = torch.tensor(row)
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(n)
        logits = _feed(self.model, cache, batch)
        steps = torch.cat([first.expand(n, 1, -1), torch.log_softmax(logits[:, :-1].float(), -1)], dim=1)
        token_lp = steps.gather(2, batch.unsqueeze(-1)).squeeze(-1)  # [n, width]
        real = torch.tensor([[j < len(r) for j in range(width)] for r in ids], device=token_lp.device)
        return (token_lp * real).sum(1).cpu()  # right padding: later positions never affect earlier ones

    # -- candidates ----------------------------------------------------------------------------
    @torch.inference_mode()
    def candidates(self, exemplars: Sequence[str], *, beam: int = 50, max_tokens: int = 15, lam: float = 0.2,
                   mode: str = "rerank") -> list[str]:
        """Distinct non-empty descriptions from beam search under p(d | E) (per_step: under the PMI), best
        first; at most `max_tokens` tokens, the closing one included.

        The prompt is run once and its cache shared by all beams (a beam search that re-ran the
        ~500-token prompt per beam would cost 50× more).
        """
        per_step = mode == "per_step" and lam != 0
        streams = [_Stream(*self._captioner(exemplars))]
        if per_step:
            streams.append(_Stream(*self._prior()))
        tokens = torch.zeros(1, 0, dtype=torch.long)
        score = torch.zeros(1)
        finished: list[tuple[float, list[int]]] = []
        for step in range(max_tokens):
            step_lp = streams[0].next - (lam * streams[1].next if per_step else 0)  # [alive, vocab]
            step_lp[:, self.barred] = -torch.inf
            if step == max_tokens - 1:  # the last token a description may have is its end
                keep = torch.full_like(step_lp, -torch.inf)
                keep[:, self.newline] = step_lp[:, self.newline]
                step_lp = keep
            total = (score[:, None] + step_lp).flatten()
            top = total.topk(min(2 * beam, total.numel()))
            keep_rows, keep_tok, keep_score = [], [], []
            for value, flat in zip(top.values.tolist(), top.indices.tolist()):
                row, tok = divmod(flat, step_lp.shape[1])
                if value == -math.inf:
                    break
                if tok == self.newline:  # a description ends here
                    finished.append((value, tokens[row].tolist()))
                elif len(keep_rows) < beam:
                    keep_rows.append(row), keep_tok.append(tok), keep_score.append(value)
            finished.sort(key=lambda f: -f[0])
            done = len(finished) >= beam and (not keep_score or max(keep_score) < finished[beam - 1][0])
            if done or not keep_rows:
                break
            rows = torch.tensor(keep_rows)
            tokens = torch.cat([tokens[rows], torch.tensor(keep_tok)[:, None]], dim=1)
            score = torch.tensor(keep_score)
            for st in streams:
                st.advance(self.model, rows, tokens[:, -1:])
        tok = self.model.tokenizer
        seen: list[str] = []
        for _, ids in finished[:beam]:
            text = tok.decode(ids, skip_special_tokens=True).strip()
            if text and text not in seen:  # (line breaks are barred inside a description)
                seen.append(text)
        return seen


class _Stream:
    """One prompt's cache and next-token log-probs [alive, vocab], advanced beam by beam."""

    def __init__(self, cache, first: torch.Tensor) -> None:
        self.cache, self.next, self.rows = copy.deepcopy(cache), first[None], 1

    def advance(self, model: interp.Model, rows: torch.Tensor, last: torch.Tensor) -> None:
        """Keep the beams `rows` (indices into the current alive beams), then feed their new tokens [n, 1]."""
        if self.rows == 1:
            self.cache.batch_repeat_interleave(len(rows))
        else:
            self.cache.reorder_cache(rows.to(model.device))
        self.rows = len(rows)
        self.next = torch.log_softmax(_feed(model, self.cache, last)[:, -1].float(), -1).cpu()


def _feed(model: interp.Model, cache, ids: torch.Tensor) -> torch.Tensor:
    """Logits [n, width, vocab] of tokens ids [n, width] run on top of `cache` (extended in place)."""
    mask = torch.ones(ids.shape[0], cache.get_seq_length() + ids.shape[1], dtype=torch.long, device=model.device)
    return model.hf(input_ids=ids.to(model.device), past_key_values=cache, attention_mask=mask, use_cache=True).logits
