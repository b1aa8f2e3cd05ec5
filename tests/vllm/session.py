"""Run inside .venv-vllm (tests/test_vllm.py starts it once per test session): one vLLM engine behind
`interp serve`'s app, against the transformers engine in the same process. Prints one JSON line of
results that the tests assert on:

- parity: 8 prompts × (recipe a, recipe b, none), sent concurrently over the OpenAI API, 16 greedy tokens,
  against `interp.generate` with the same edits alone;
- cache: an unsteered request then a steered one with the same prompt (prefix-cache isolation), with the
  engine's cache_salt on and, on another prompt, off (the check must be able to fail);
- capture: `serve.vllm_capture.capture_statistics` against `probes.stats.activation_statistics` on 64 Bible
  verses (firing counts, top-1 exemplars);
- refusal: an inline edit the engine cannot run gets a 400 naming the site before anything runs.

`--compiled` runs the same checks on a compiled vLLM engine (torch.compile, taps installed before compilation at
the recipes' and captures' sites): `benchmarks/vllm.py` does, since compiling takes minutes on 2 cores.
"""

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import interp  # noqa: E402
from interp.corpora import load_corpus  # noqa: E402
from interp.models import load_skeleton, model_folder  # noqa: E402
from interp.recipes import save_recipe  # noqa: E402

NEW = 16
PROMPTS = ["The capital of France is", "Once upon a time", "def fib(n):", "My favourite food is",
           "The weather today", "In 1492, Columbus", "Water boils at", "The best way to learn"]
LONG = ("Here is a long story about a village by the sea, where fishermen mend their nets every morning and "
        "children run along the harbour wall until the bells ring. The baker opens his shop before dawn, the "
        "teacher walks to the school on the hill, and the old lighthouse keeper climbs his stairs. One day")
LONG2 = ("A report on the history of mathematics begins with counting, moves on to geometry in Egypt and Greece, "
         "and then to algebra in Baghdad. It follows the calculus of Newton and Leibniz, the rigour of the "
         "nineteenth century, and the computers of the twentieth. The next chapter")  # > 32 tokens: one cached block
CAPTURE_SITES = ["blocks.3.mlp.hook_post", "blocks.20.mlp.hook_post", "blocks.12.hook_resid_post"]


def recipes(d_model: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"a": [interp.Add("blocks.10.hook_resid_post", torch.randn(d_model, generator=g), 4.0)],
            "b": [interp.Clamp("blocks.5.mlp.hook_post", [3, 99, 700], 8.0, "generated"),
                  interp.Scale("blocks.7.attn.hook_z", list(range(64)), [0.0] * 64)],
            # the other sites vLLM maps: the stream entering layer 0 (no residual yet) and layer 8, block
            # outputs, a low-rank term on a slice of the fused gate_up_proj and on o_proj
            "c": [interp.Add("blocks.0.hook_resid_pre", torch.randn(d_model, generator=g), 0.5),
                  interp.Add("blocks.8.hook_resid_pre", torch.randn(d_model, generator=g), 1.5, "prompt"),
                  interp.Add("blocks.4.hook_attn_out", torch.randn(d_model, generator=g), 1.0),
                  interp.Add("blocks.9.hook_mlp_out", torch.randn(d_model, generator=g), 1.0, "generated"),
                  interp.LowRank("blocks.6.mlp.up_proj", 0.05 * torch.randn(1536, 4, generator=g),
                                 torch.randn(4, d_model, generator=g)),
                  interp.LowRank("blocks.11.self_attn.o_proj", 0.05 * torch.randn(d_model, 2, generator=g),
                                 torch.randn(2, d_model, generator=g), cols=list(range(0, 576, 3)))]}


def reference(model, edits) -> dict:
    """Greedy continuations (text) on the transformers engine, one padded batch per recipe."""
    out = {}
    prompts = PROMPTS + [LONG, LONG2]
    for r in ("a", "b", "c", None):
        texts = interp.generate(model, prompts, edits.get(r, []), max_new_tokens=NEW)
        out.update({(r, p): t for p, t in zip(prompts, texts)})
    return out


def capture_compare(ref, got, sites) -> dict:
    out = {}
    for site in sites:
        c_ref, c_got = ref.tensors[f"{site}/counts"].float(), got.tensors[f"{site}/counts"].float()
        rel = ((c_got - c_ref).abs().sum() / c_ref.sum().clamp(min=1)).item()
        d_ref, d_got = ref.tensors[f"{site}/topk_doc"][:, 0], got.tensors[f"{site}/topk_doc"][:, 0]
        p_ref, p_got = ref.tensors[f"{site}/topk_pos"][:, 0], got.tensors[f"{site}/topk_pos"][:, 0]
        top1 = ((d_ref == d_got) & (p_ref == p_got)).float().mean().item()
        tokens_equal = bool(torch.equal(ref.tensors[f"{site}/tokens"], got.tensors[f"{site}/tokens"]))
        out[site] = {"count_rel_diff": rel, "top1_equal": top1, "tokens_equal": tokens_equal,
                     "max_count_rel_unit": (c_got - c_ref).abs().max().item()}
    return out


async def serve_and_check(skeleton, folder, recipe_files, edits, corpus, compiled: bool) -> dict:
    import uvicorn
    from openai import AsyncOpenAI

    from serve import app
    from serve.vllm_capture import capture_statistics
    from serve.vllm_engine import VllmEngine, VllmOptions

    # the transformers engine's answers, computed while vLLM starts (its engine core is another process)
    references = asyncio.create_task(asyncio.to_thread(transformers_side, edits, corpus))
    await asyncio.sleep(0.5)
    holder = {}

    def build():
        taps = tuple(e.site for es in edits.values() for e in es) + tuple(CAPTURE_SITES) if compiled else ()
        holder["engine"] = VllmEngine(str(folder), VllmOptions(dtype="float32", max_model_len=512, max_num_seqs=32,
                                                               block_size=32, compile=compiled, taps=taps))
        return holder["engine"]

    t0 = time.time()
    api = app(skeleton, recipe_files, recipe_dir=tempfile.mkdtemp(), engine=build)
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.2)
        if task.done():
            task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    result = {"engine_start_s": time.time() - t0}
    ref, ref_stats, result["reference_seconds"] = await references
    result["waited_for_reference_s"] = time.time() - t0 - result["engine_start_s"]
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    name = skeleton.name

    async def complete(prompt, recipe):
        r = await client.completions.create(model=f"{name}:{recipe}" if recipe else name, prompt=prompt,
                                            max_tokens=NEW, temperature=0)
        return r.choices[0].text

    t0 = time.time()
    jobs = [(r, p) for p in PROMPTS for r in ("a", "b", None)] + [("c", p) for p in PROMPTS]
    texts = await asyncio.gather(*(complete(p, r) for r, p in jobs))
    result["parity"] = {"jobs": len(jobs), "equal": sum(t == ref[j] for j, t in zip(jobs, texts)),
                        "mismatches": [[r, p, t, ref[(r, p)]] for (r, p), t in zip(jobs, texts) if t != ref[(r, p)]],
                        "steered_differ": sum(ref[(r, p)] != ref[(None, p)] for r, p in jobs if r),
                        "c_differ": sum(ref[(r, p)] != ref[(None, p)] for r, p in jobs if r == "c"),
                        "seconds": time.time() - t0}

    r = await client.completions.create(model=f"{name}:a", prompt=PROMPTS[0], max_tokens=NEW, temperature=0,
                                        logprobs=3)
    lp = r.choices[0].logprobs
    result["logprobs"] = {
        "text_equal": r.choices[0].text == ref[("a", PROMPTS[0])], "n": len(lp.tokens),
        "greedy_is_top": all(abs(t - max(top.values())) < 1e-5 and len(top) == 3
                             for t, top in zip(lp.token_logprobs, lp.top_logprobs)),
        "sorted": all(list(top.values()) == sorted(top.values(), reverse=True) for top in lp.top_logprobs)}

    # refused before it runs: on a compiled engine a site without a tap, on any a site vLLM's layers lack
    site = "blocks.2.hook_resid_post" if compiled else "blocks.2.hook_resid_mid"
    result["refused"] = await http_status(port, {"model": name, "prompt": PROMPTS[0], "max_tokens": 2, "edits": [
        {"kind": "add", "site": site, "vector": [0.0] * 576}]})

    engine = holder["engine"]
    cache = {}
    for salt, prompt in ((True, LONG), (False, LONG2)):
        engine.salt = salt
        plain = await complete(prompt, None)
        steered = await complete(prompt, "a")
        cache["salted" if salt else "unsalted"] = {
            "plain_equal": plain == ref[(None, prompt)], "steered_equal": steered == ref[("a", prompt)],
            "steered_differs_from_plain": ref[("a", prompt)] != ref[(None, prompt)]}
    engine.salt = True
    result["cache"] = cache

    t0 = time.time()
    stats = await capture_statistics(engine, skeleton.tokenizer, corpus, CAPTURE_SITES, top_k=4, max_length=64)
    result["capture_seconds"] = time.time() - t0
    server.should_exit = True
    await task
    result["capture"] = capture_compare(ref_stats, stats, CAPTURE_SITES)
    return result


async def http_status(port: int, body: dict) -> list:
    """[status, error message] of a completion request (the OpenAI client hides refusals in exceptions)."""
    import httpx

    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"http://127.0.0.1:{port}/v1/completions", json=body)
    return [r.status_code, r.json().get("error", {}).get("message", "")]


def transformers_side(edits, corpus):
    """(greedy texts, activation statistics, seconds) of the transformers engine."""
    from probes.stats import activation_statistics

    t0 = time.time()
    model = interp.load_model("smollm2-135m")
    ref = reference(model, edits)
    stats = activation_statistics(model, corpus, CAPTURE_SITES, top_k=4, max_length=64, progress=False)
    return ref, stats, time.time() - t0


def main(compiled: bool) -> int:
    t0 = time.time()
    skeleton = load_skeleton("smollm2-135m")
    edits = recipes(skeleton.adapter.d_model)
    tmp = Path(tempfile.mkdtemp())
    files = {n: save_recipe(tmp / f"{n}.safetensors", es, skeleton) for n, es in edits.items()}
    corpus = load_corpus("bible:en,fr:32")
    result = asyncio.run(serve_and_check(skeleton, model_folder("smollm2-135m")[0], files, edits, corpus, compiled))
    result["compiled"] = compiled
    result["total_seconds"] = time.time() - t0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main("--compiled" in sys.argv))
