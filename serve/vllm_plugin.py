"""interp's vLLM plugin (entry point `vllm.general_plugins: interp`): vLLM loads it in every process.

It gives vLLM's worker class the methods of `serve.vllm_worker.InterpWorkerExtension`, so that any
vLLM engine in an environment where interp is installed — `vllm serve`, `vllm.LLM`, our
`interp serve --engine vllm` — takes interp's edit sets and captures over `collective_rpc`, and
requests pick a set with `SamplingParams(extra_args={"interp_recipe": name})` (`vllm_xargs` in
vLLM's own HTTP API). Loading it twice is harmless; `VLLM_PLUGINS` (vLLM's allow-list) can leave it out,
and then `worker_extension_cls="serve.vllm_worker.InterpWorkerExtension"` does the same job.
"""

from __future__ import annotations


def register() -> None:
    from vllm.v1.worker.worker_base import WorkerBase

    from serve.vllm_worker import InterpWorkerExtension

    for name, value in vars(InterpWorkerExtension).items():
        if name.startswith(("interp_", "_interp_")) and not hasattr(WorkerBase, name):
            setattr(WorkerBase, name, value)
