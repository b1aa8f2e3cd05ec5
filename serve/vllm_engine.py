"""The vLLM engine: the same requests and steering as `serve.engine.Engine`, run by vLLM's `AsyncLLM`.

vLLM schedules, batches and caches; interp's plugin (`serve.vllm_plugin`) gives vLLM's workers the
taps of `serve.vllm_worker`. This side keeps the edit sets the running requests use: each set gets a
name from its digest (`interp.edits.edits_digest`), every set is shipped to the workers when a new one
arrives (`collective_rpc("interp_set_recipes")`), and a request names its set in
`SamplingParams.extra_args`. A steered request's prompt carries that digest as its `cache_salt`, so a
prefix cached by an unsteered request (or by another recipe) is never reused for it; unsteered
requests share the prefix cache as usual.

Runs in `.venv-vllm` (`make install-vllm`); `interp serve --engine vllm` builds it.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from dataclasses import dataclass
from typing import AsyncIterator

from interp.edits import EditError, edits_digest, pack_edit_sets
from serve.engine import NO_STEERING, EngineError, Sampling, Steering, TokenInfo, Update
from serve.vllm_taps import Shapes, canonical_sites, compile_options, parse_site


@dataclass(frozen=True)
class VllmOptions:
    """How vLLM runs the model (its own engine arguments, by vLLM's names)."""

    dtype: str = "auto"
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.9
    seed: int = 0
    enable_prefix_caching: bool = True
    block_size: int | None = None  # KV cache block (tokens); None: the platform's (128 on CPU, 16 on GPU)
    compile: bool = False  # torch.compile (+ CUDA graphs split at the taps on GPUs); edits only at `taps`
    taps: tuple[str, ...] = ()  # the sites a compiled engine can edit or capture, fixed before compilation


class VllmEngine:
    """Serve the model in `folder` on vLLM with per-request edits; the interface of `serve.engine.Engine`."""

    max_slots = 64  # edit sets kept before those no running request uses are dropped

    def __init__(self, folder: str, options: VllmOptions = VllmOptions()):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from transformers import AutoConfig

        self.options = options
        self.shapes = Shapes(AutoConfig.from_pretrained(folder))
        self.taps = frozenset(canonical_sites(options.taps)) if options.compile else None
        compiled = {}
        if options.compile:  # taps installed at model load, before vLLM compiles (serve.vllm_taps)
            from vllm.platforms import current_platform

            compiled = {"additional_config": {"interp_taps": sorted(self.taps)},
                        "compilation_config": compile_options(current_platform.is_cuda_alike())}
        args = AsyncEngineArgs(
            model=str(folder), dtype=options.dtype, max_model_len=options.max_model_len, seed=options.seed,
            tensor_parallel_size=options.tensor_parallel_size, pipeline_parallel_size=options.pipeline_parallel_size,
            max_num_seqs=options.max_num_seqs, max_num_batched_tokens=options.max_num_batched_tokens,
            gpu_memory_utilization=options.gpu_memory_utilization, enable_prefix_caching=options.enable_prefix_caching,
            block_size=options.block_size, enforce_eager=not options.compile, **compiled)
        self.llm = AsyncLLM.from_engine_args(args)
        self.capacity = options.max_model_len
        self._sets: dict[str, list] = {}  # digest → edits, as the workers hold them
        # Steering → digest, computed once per Steering (the registry shares one per recipe and strength);
        # weak, so that a Steering gone never lends its entry to a new one
        self._names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._users: dict[str, int] = {}  # digest → running requests
        self._running: set[str] = set()
        self._ship = asyncio.Lock()
        self.salt = True  # cache_salt on steered requests (off only to show what it prevents)

    # ------------------------------------------------------------ edit sets in the workers
    def check(self, steering: Steering) -> None:
        """EditError for an edit vLLM cannot take (a site it lacks, a compiled engine's untapped site), before
        anything runs: the server calls it for every request before `generate` (the workers refuse such sets
        too, for plain vLLM users)."""
        if not steering.edits:
            return
        for e in steering.edits:
            parse_site(e.site, self.shapes)
        if self.taps is None:
            return
        missing = sorted(set(canonical_sites(e.site for e in steering.edits)) - self.taps)
        if missing:
            raise EditError(f"this server runs vLLM compiled with interp taps at {', '.join(sorted(self.taps)) or 'no site'}; "
                            f"{', '.join(missing)} has none (restart with --tap SITE, or without --compile)")

    async def _name_of(self, steering: Steering) -> str | None:
        """The digest naming the request's edit set, shipping the sets to the workers if it is new."""
        if not steering.edits:
            return None
        name = self._names.get(steering)
        if name is None:
            name = self._names[steering] = edits_digest(steering.edits)
        async with self._ship:
            if name not in self._sets:
                if len(self._sets) >= self.max_slots:
                    self._sets = {n: e for n, e in self._sets.items() if self._users.get(n)}
                sets = {**self._sets, name: list(steering.edits)}
                await self.llm.collective_rpc("interp_set_recipes", args=(pack_edit_sets(sets),))
                self._sets = sets  # only once the workers took them: a refused set never rides along again
            self._users[name] = self._users.get(name, 0) + 1
        return name

    # ------------------------------------------------------------ the server's side
    def alive(self) -> bool:
        return self.llm is not None and not self.llm.errored

    def queue_length(self) -> int:
        return len(self._running)

    async def generate(self, prompt: list[int], sampling: Sampling, steering: Steering = NO_STEERING,
                       *, stream: bool = False) -> AsyncIterator[Update]:
        """Yield updates of one request until it ends; leaving early (a client gone) aborts it."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if not self.alive():
            raise EngineError("the vLLM engine is not running")
        name = await self._name_of(steering)
        rid = f"req-{uuid.uuid4().hex[:16]}"
        params = SamplingParams(
            max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
            seed=sampling.seed, logprobs=sampling.logprobs, ignore_eos=sampling.ignore_eos,
            extra_args={"interp_recipe": name} if name else None, detokenize=False,
            output_kind=RequestOutputKind.CUMULATIVE if stream else RequestOutputKind.FINAL_ONLY)
        request = {"prompt_token_ids": list(prompt)}
        if name and self.salt:
            request["cache_salt"] = name  # never reuse a prefix cached without these edits
        self._running.add(rid)
        done = False
        try:
            async for out in self.llm.generate(request, params, rid):
                completion = out.outputs[0]
                tokens = list(completion.token_ids)
                done = out.finished
                yield Update(tokens, _infos(tokens, completion.logprobs, sampling.logprobs), done)
                if done:
                    return
        except Exception as exc:  # the engine died under the request
            if not self.alive():
                raise EngineError(f"the vLLM engine failed: {type(exc).__name__}") from None
            raise
        finally:
            self._running.discard(rid)
            if name:
                self._users[name] -= 1
            if not done:
                await self.llm.abort(rid)

    async def complete(self, prompts: list[list[int]], edits: list, *, max_tokens: int,
                       repetition_penalty: float = 1.0) -> list[list[int]]:
        """Greedy continuations (token ids) of every prompt with `edits`, all at once (`interp steer`)."""
        from vllm import SamplingParams

        steering = Steering(list(edits), "steer")
        self.check(steering)
        name = await self._name_of(steering) if edits else None

        async def one(ids: list[int]) -> list[int]:
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0, repetition_penalty=repetition_penalty,
                                    detokenize=False, extra_args={"interp_recipe": name} if name else None)
            request = {"prompt_token_ids": ids, **({"cache_salt": name} if name else {})}
            tokens: list[int] = []
            async for out in self.llm.generate(request, params, f"steer-{uuid.uuid4().hex[:16]}"):
                tokens = list(out.outputs[0].token_ids)
            return tokens

        try:
            return list(await asyncio.gather(*(one(list(p)) for p in prompts)))
        finally:
            if name:
                self._users[name] -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Stop vLLM (its engine core and workers) and drop it, so that nothing stops it again at exit."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.shutdown()
            del llm
            gc.collect()


def _infos(tokens: list[int], logprobs, n: int | None) -> list[TokenInfo]:
    """TokenInfo per generated token from vLLM's logprobs (per position {token: Logprob}: the top n by
    rank, and the sampled token wherever it ranks), or zeros where none were asked for."""
    if not logprobs:
        return [TokenInfo(t, 0.0, []) for t in tokens]
    out = []
    for t, alts in zip(tokens, logprobs):
        ranked = sorted(alts.items(), key=lambda kv: kv[1].rank)
        out.append(TokenInfo(t, float(alts[t].logprob), [(k, float(v.logprob)) for k, v in ranked if v.rank <= (n or 0)]))
    return out
