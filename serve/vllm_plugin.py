"""interp's vLLM plugin (entry point `vllm.general_plugins: interp`): vLLM loads it in every process.

It gives vLLM's worker class the methods of `serve.vllm_worker.InterpWorkerExtension`, so that any
vLLM engine in an environment where interp is installed — `vllm serve`, `vllm.LLM`, our
`interp serve --engine vllm` — takes interp's edit sets and captures over `collective_rpc`, and
requests pick a set with `SamplingParams(extra_args={"interp_recipe": name})` (`vllm_xargs` in
vLLM's own HTTP API). It also wraps vLLM's model loader so that a compiled engine gets its taps
(`additional_config={"interp_taps": [sites]}`) before compilation (`serve.vllm_taps`).
Loading it twice is harmless; `VLLM_PLUGINS` (vLLM's allow-list) can leave it out, and then
`worker_extension_cls="serve.vllm_worker.InterpWorkerExtension"` gives the methods (eager engines only).
"""

from __future__ import annotations

import functools


def register() -> None:
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader
    from vllm.v1.worker.worker_base import WorkerBase

    from serve import vllm_taps
    from serve.vllm_worker import InterpWorkerExtension

    for name, value in vars(InterpWorkerExtension).items():
        if name.startswith(("interp_", "_interp_")) and not hasattr(WorkerBase, name):
            setattr(WorkerBase, name, value)
    load = BaseModelLoader.load_model
    if getattr(load, "_interp_taps", False):
        return

    @functools.wraps(load)
    def load_model(self, vllm_config, *args, **kwargs):
        model = load(self, vllm_config, *args, **kwargs)
        vllm_taps.install_static(model, vllm_config)
        return model

    load_model._interp_taps = True
    BaseModelLoader.load_model = load_model
