"""Run inside .venv-vllm (tests/test_vllm.py starts it): vLLM with interp's worker extension, recipes A, B and none
sent together, against interp.generate with the same edits alone. Prints one JSON line; exits 1 on any mismatch."""

import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import interp  # noqa: E402
from interp.edits import edit_to_json  # noqa: E402
from interp.cache import cache_dir  # noqa: E402

NEW = 16
PROMPTS = ["The capital of France is", "Once upon a time", "def fib(n):", "My favourite food is"]


def recipes(d_model: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"a": [interp.Add("blocks.10.hook_resid_post", torch.randn(d_model, generator=g), 4.0)],
            "b": [interp.Clamp("blocks.5.mlp.hook_post", [3, 99, 700], 8.0, "generated")]}


def main() -> int:
    model = interp.load_model("smollm2-135m")
    edits = recipes(model.adapter.d_model)
    jobs = [(r, p) for p in range(len(PROMPTS)) for r in ("a", "b", None)]
    expect = [interp.generate(model, PROMPTS[p], edits.get(r, []), max_new_tokens=NEW, return_ids=True)[0].tolist()
              for r, p in jobs]
    folder = cache_dir() / "models" / "smollm2-135m"  # the safetensors folder load_model built
    del model
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(folder), dtype="float32", enforce_eager=True, max_model_len=512, seed=0,
              worker_extension_cls="serve.vllm_worker.InterpWorkerExtension")
    llm.collective_rpc("interp_set_recipes",
                       args=(json.dumps({n: [edit_to_json(e) for e in es] for n, es in edits.items()}),))
    params = [SamplingParams(temperature=0, max_tokens=NEW, extra_args={"recipe": r} if r else None) for r, _ in jobs]
    outs = llm.generate([PROMPTS[p] for _, p in jobs], params, use_tqdm=False)
    got = [list(o.outputs[0].token_ids) for o in outs]
    llm.collective_rpc("interp_clear")
    plain = {p: e for (r, p), e in zip(jobs, expect) if r is None}
    result = {"jobs": len(jobs), "equal": sum(g == e for g, e in zip(got, expect)),
              "steered_differ": sum(e != plain[p] for (r, p), e in zip(jobs, expect) if r is not None),
              "mismatches": [[r, PROMPTS[p]] for (r, p), g, e in zip(jobs, got, expect) if g != e]}
    print(json.dumps(result))
    return 0 if not result["mismatches"] and result["steered_differ"] >= 6 else 1


if __name__ == "__main__":
    sys.exit(main())
