"""Activation statistics on vLLM: the reducers of `interp analyze --probe stats`, filled inside vLLM's workers.

Each document becomes one request (its tokens exactly as the transformers capture tokenizes them, one
new token, a `cache_salt` of its own so no prefix is skipped), tagged in `extra_args` with its document
and group index. The workers' taps (`serve.vllm_worker`) update activation frequency, moments and
top-k exemplars from those tokens only; the reducers come back as safetensors bytes and merge as the
data-parallel path merges them (pipeline stages hold different layers, so their sites simply join).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Sequence

from interp.batching import tokenize
from interp.capture import groups_of
from interp.errors import CorpusError
from interp.reducers import Reducer
from probes.stats import StatsResult, stats_result
from serve.vllm_engine import VllmEngine


def _requests(tokenizer, docs: Sequence, groups: list[str], max_length: int) -> list[tuple[int, list[int], int, int]]:
    """(document index, token ids, group index, tokens that do not count) of every non-blank document."""
    out = []
    for i, d in enumerate(docs):
        text = d if isinstance(d, str) else d.text
        if not text.strip():
            continue
        prompt = None if isinstance(d, str) else d.prompt
        group = "all" if isinstance(d, str) else (d.group or "all")
        batch = tokenize(tokenizer, [text], prompts=[prompt], max_length=max_length)
        ids = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
        skip = int((~batch.mask[0][batch.attention_mask[0].bool()]).sum())  # the leading prompt tokens
        if ids:
            out.append((i, ids, groups.index(group), skip))
    return out


def _merged(results: list) -> dict[str, Reducer]:
    """One reducer per kind from the workers' results (None from ranks that hold no capture)."""
    out: dict[str, Reducer] = {}
    for result in results:
        for r in map(Reducer.from_bytes, result or []):
            if r.kind in out:
                out[r.kind].merge(r)
            else:
                out[r.kind] = r
    return out


async def capture_statistics(engine: VllmEngine, tokenizer, corpus: Sequence, sites: Sequence[str], *,
                             top_k: int = 16, max_length: int = 256, concurrency: int = 64,
                             progress: bool = False) -> StatsResult:
    """Stream `corpus` through the vLLM engine and summarise every unit at `sites` (as
    `probes.stats.activation_statistics` does on the transformers engine)."""
    from tqdm.auto import tqdm
    from vllm import SamplingParams

    docs = list(corpus)
    groups = groups_of(docs)
    jobs = _requests(tokenizer, docs, groups, max_length)
    if not jobs:
        raise CorpusError("the corpus has no non-blank documents to capture")
    await engine.llm.collective_rpc("interp_capture_start", args=(list(sites), groups, top_k))
    run = uuid.uuid4().hex[:12]
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(jobs), desc="capture (vLLM)", unit="doc", disable=not progress, leave=False)

    async def one(doc: int, ids: list[int], group: int, skip: int) -> None:
        params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                extra_args={"interp_capture": [doc, group, skip]})
        async with gate:
            async for _ in engine.llm.generate({"prompt_token_ids": ids, "cache_salt": f"capture-{run}-{doc}"},
                                               params, f"capture-{run}-{doc}"):
                pass
        bar.update()

    try:
        await asyncio.gather(*(one(*job) for job in jobs))
    finally:
        bar.close()
        results = await engine.llm.collective_rpc("interp_capture_result")
    reducers = _merged(results)
    params = {"top_k": top_k, "max_length": max_length, "n_tokens": sum(len(ids) - skip for _, ids, _, skip in jobs),
              "dtype": str(engine.options.dtype), "engine": "vllm"}
    return stats_result(docs, list(sites), reducers["frequency"], reducers["moments"], reducers["topk"], params)
