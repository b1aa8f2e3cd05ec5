"""The transformers engine: continuous batching (transformers' scheduler and paged KV cache) + per-row edits.

transformers' `ContinuousBatchingManager` packs the running requests into one flattened batch
`[1, tokens]` per step, with each request's span (`cu_seq_lens_q`) and positions (`position_ids`).
We add three things and write no scheduler or cache of our own:

- a forward pre-hook on the model that maps each token of the step to its request's row key
  (`interp.rows.row_keys`), so the site hooks (`interp.rows.RowHooks`) give every request its own
  edits in the same pass;
- a logits processor that picks each request's next token by its own sampling parameters (greedy,
  or temperature / top-p with the request's seeded generator) and records log-probabilities; the
  manager's greedy step then takes exactly that token;
- request bookkeeping: steering, prompt length and sampling per request id, cancellation.

Prefix sharing of the paged cache is off: two requests with one prompt but different recipes
must not share the prompt's keys and values.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator

import torch

from interp.models import Model
from interp.rows import RowHooks, RowPlan, row_keys


@dataclass(frozen=True)
class Sampling:
    """One request's decoding parameters (OpenAI's names)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None  # how many alternatives to report per token (None: no log-probabilities)
    ignore_eos: bool = False


@dataclass(eq=False)
class Steering:
    """The edits of one request (already scaled by their strengths) and a label for metrics."""

    edits: list
    label: str = "none"


NO_STEERING = Steering([], "none")


@dataclass
class TokenInfo:
    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class _Active:
    steering: Steering
    prompt_len: int
    sampling: Sampling
    generator: torch.Generator | None
    infos: list[TokenInfo] = field(default_factory=list)


@dataclass
class Update:
    """What a request has so far: every generated token, their log-probabilities, whether it ended, an error."""

    tokens: list[int]
    infos: list[TokenInfo]
    finished: bool
    error: str | None = None


class EngineError(RuntimeError):
    """The engine cannot take or finish a request (stopped, or its worker failed)."""


class Engine:
    """Serve `model` with per-request edits on transformers' continuous batching.

    max_batch_tokens: tokens per step; num_blocks × page_size: tokens the KV cache holds in all.
    """

    max_slots = 64  # edit sets the plan keeps before it drops those no running request uses

    def __init__(self, model: Model, *, max_batch_tokens: int = 1024, num_blocks: int = 256, page_size: int = 32):
        from transformers import ContinuousBatchingConfig, GenerationConfig

        self.model = model
        tok = model.tokenizer
        eos = model.hf.generation_config.eos_token_id
        self.eos = eos if eos is not None else tok.eos_token_id
        self.capacity = num_blocks * page_size
        config = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=self.eos,
                                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else self.eos)
        cb_config = ContinuousBatchingConfig(num_blocks=num_blocks, max_batch_tokens=max_batch_tokens,
                                             page_size=page_size, allow_block_sharing=False)
        self.cb = model.hf.init_continuous_batching(generation_config=config, continuous_batching_config=cb_config)
        self.cb.logit_processor.logits_processor.append(self._select)
        self.cb.logit_processor.do_processing = True
        self._active: dict[str, _Active] = {}
        self._lock = threading.Lock()
        self._slots: dict[Steering, int] = {}  # edit set → its slot in the plan
        self._plan: RowPlan | None = None
        self._logit_rows: list[str] = []
        self._hooks = RowHooks(model)
        self._pre = model.hf.register_forward_pre_hook(self._on_forward, with_kwargs=True)
        self.cb.start()

    # ------------------------------------------------------------ the generation thread
    def _on_forward(self, module, args, kwargs) -> None:
        """Map this step's tokens to their requests' row keys (runs in the generation thread)."""
        cu = kwargs.get("cu_seq_lens_q")
        processor = self.cb.batch_processor
        if cu is None or processor is None:  # not a continuous-batching step: leave it alone
            self._hooks.plan = None
            return
        batch = processor.inputs_and_outputs.requests_in_batch
        ids = [f.state.request_id for f in batch]
        self._logit_rows = [f.state.request_id for f in batch if f.has_new_token]
        with self._lock:
            active = [self._active.get(i) for i in ids]
        steerings = [a.steering if a is not None and a.steering.edits else None for a in active]
        if not any(steerings):
            self._hooks.plan = None
            return
        self._update_plan([s for s in steerings if s is not None])
        cu = cu[: len(ids) + 1].tolist()
        starts, lengths = cu[:-1], [b - a for a, b in zip(cu[:-1], cu[1:])]
        pos = kwargs["position_ids"][0, : cu[-1]].long().cpu()
        self._hooks.keys = row_keys([self._slots[s] if s is not None else None for s in steerings], starts, lengths,
                                    pos, [a.prompt_len if a is not None else 0 for a in active])
        self._hooks.plan = self._plan

    def _update_plan(self, present: list[Steering]) -> None:
        """One plan over every edit set seen lately, rebuilt only when a new one arrives (requests come and
        go without a rebuild); sets no running request uses are dropped once there are too many."""
        if all(s in self._slots for s in present):
            return
        keep = list(self._slots) if len(self._slots) < self.max_slots else []
        order = list(dict.fromkeys(keep + present))
        self._plan = RowPlan.build(self.model, [s.edits for s in order])
        self._slots = {s: i for i, s in enumerate(order)}
        self._hooks.ensure(self._plan)

    def _select(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Pick each request's next token ([rows, vocab] scores); the manager's argmax then takes it."""
        with self._lock:
            active = [self._active.get(i) for i in self._logit_rows]
        if len(active) != scores.shape[0]:
            return scores
        logp = torch.log_softmax(scores.float(), dim=-1)
        chosen = scores.argmax(dim=-1)
        for r, a in enumerate(active):
            if a is None:
                continue
            s = a.sampling
            if s.temperature > 0:
                chosen[r] = _sample(scores[r].float(), s.temperature, s.top_p, a.generator)
            top = []
            if s.logprobs:
                v, i = logp[r].topk(s.logprobs)
                top = list(zip(i.tolist(), v.tolist()))
            a.infos.append(TokenInfo(int(chosen[r]), float(logp[r, chosen[r]]), top))
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.view(-1, 1), 0.0)
        return out

    # ------------------------------------------------------------ the server's side
    def alive(self) -> bool:
        return self.cb.is_running() and self.cb.background_thread_status.fatal_error is None

    def queue_length(self) -> int:
        """Requests submitted and not yet finished."""
        with self._lock:
            return len(self._active)

    async def generate(self, prompt: list[int], sampling: Sampling, steering: Steering = NO_STEERING,
                       *, stream: bool = False) -> AsyncIterator[Update]:
        """Yield updates of one request until it ends; leaving early (a client gone) cancels it."""
        if not self.alive():
            raise EngineError("the generation worker is not running")
        rid = f"req-{uuid.uuid4().hex[:16]}"
        queue: asyncio.Queue = asyncio.Queue()
        gen = None
        if sampling.temperature > 0:
            gen = torch.Generator()
            gen.manual_seed(sampling.seed if sampling.seed is not None else int(torch.randint(2**62, (1,))))
        with self._lock:
            self._active[rid] = _Active(steering, len(prompt), sampling, gen)
        self.cb.register_result_handler(rid, queue.put_nowait)
        done = False
        try:
            if self.cb.add_request(list(prompt), request_id=rid, max_new_tokens=sampling.max_tokens,
                                   streaming=stream,
                                   eos_token_id=-1 if sampling.ignore_eos else self.eos) is None:
                raise EngineError("the generation worker refused the request (stopping)")
            while True:
                out = await queue.get()
                done = out.is_finished()
                with self._lock:
                    infos = list(self._active[rid].infos)
                yield Update(list(out.generated_tokens), infos[: len(out.generated_tokens)], done, out.error)
                if done:
                    return
        finally:
            if not done:
                self.cb.cancel_request(rid)
            with self._lock:
                self._active.pop(rid, None)
            with self.cb.output_router._lock:
                self.cb.output_router.result_handlers.pop(rid, None)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (cancelling what runs), remove every hook; the model is as it was."""
        with self._lock:
            running = list(self._active)
        for rid in running:
            self.cb.cancel_request(rid)
        try:
            self.cb.stop(block=True, timeout=timeout, hard_stop=True)
        finally:
            self._pre.remove()
            self._hooks.close()
            self.model.hf.destroy_cached_continuous_batching_manager()


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """One token from softmax(logits / temperature), restricted to the top-p nucleus."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        p, i = probs.sort(descending=True)
        keep = p.cumsum(0) - p < top_p  # the smallest prefix whose mass reaches top_p
        probs = torch.zeros_like(probs).scatter_(0, i[keep], p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))
