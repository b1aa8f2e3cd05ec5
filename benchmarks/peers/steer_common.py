"""Shared by the steering peers (benchmarks/steering.py): edit specs and the run (loading and timing: shared.py).

Each peer script (steer_pyvene.py, steer_steering_vectors.py, steer_repeng.py) runs
in its own venv, where interp cannot be imported (the peers need transformers 4.x),
so this module uses only torch, transformers and safetensors. A peer reads one
JSON object on stdin:

    {"model_dir": "...", "threads": 2, "warmup": 2, "reps": 9, "max_foreign": 0.1,
     "input_ids": [[...]], "attention_mask": [[...]], "pad_token_id": 2,
     "max_new_tokens": 32, "edits": {"one": [spec, ...], "eight": [spec, ...]}}

and writes one JSON object on stdout: versions, per-repetition seconds of each job
("plain": HF generate with no hooks, "one", "eight": the peer steering), interleaved
in rotating order, the new token ids each job produced, and a sentence per job
saying exactly what the peer ran.

An edit spec is a plain dict, the JSON form of one interp edit:

    {"kind": "add",   "layer": 10, "site": "resid_post", "vector": [576 floats]}
    {"kind": "scale", "layer": 11, "site": "mlp_post",   "neurons": [...], "gains": [...]}
    {"kind": "clamp", "layer": 5,  "site": "mlp_post",   "neurons": [...], "values": [...]}

site "resid_post" is blocks.L.hook_resid_post (the decoder layer's output);
"mlp_post" is blocks.L.mlp.hook_post (the input of down_proj, act(gate)·up).
The benchmark only puts Scale and Clamp-to-0 edits at mlp_post, which are exactly
equivalent on the output of mlp.act_fn (act(gate)), the only MLP-neuron site the
peers can reach; gains are powers of two, so even the rounding is the same.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Callable

from shared import load_model, timed_reps  # noqa: E402  (benchmarks/peers/shared.py)

warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------- edit specs


def tensors(spec: dict, width: int) -> dict:
    """The spec's payload as dense float tensors over the site's width (interp's fused form)."""
    import torch

    if spec["kind"] == "add":
        return {"vector": torch.tensor(spec["vector"], dtype=torch.float32)}
    idx = torch.tensor(spec["neurons"], dtype=torch.long)
    if spec["kind"] == "scale":
        gain = torch.ones(width)
        gain[idx] = torch.tensor(spec["gains"], dtype=torch.float32)
        return {"gain": gain}
    mask, values = torch.zeros(width, dtype=torch.bool), torch.zeros(width)
    mask[idx] = True
    values[idx] = torch.tensor(spec["values"], dtype=torch.float32)
    return {"mask": mask, "values": values}


def site_function(specs: list, width: int) -> Callable:
    """x -> x edited, with interp's semantics at one site (kinds in order scale, clamp, add)."""
    import torch

    order = {"scale": 0, "clamp": 1, "add": 2}
    steps = [(s["kind"], tensors(s, width)) for s in sorted(specs, key=lambda s: order[s["kind"]])]

    def fn(x):
        for kind, p in steps:
            if kind == "add":
                x = x + p["vector"]
            elif kind == "scale":
                x = x * p["gain"]
            else:
                x = torch.where(p["mask"], p["values"], x)
        return x

    return fn


def by_site(specs: list) -> dict:
    """{(site, layer): [specs]} in first-seen order."""
    out: dict = {}
    for s in specs:
        out.setdefault((s["site"], s["layer"]), []).append(s)
    return out


def describe(specs: list) -> str:
    """'add@L10.resid_post, clamp@L5.mlp_post(16)' for reports."""
    parts = []
    for s in specs:
        n = f"({len(s['neurons'])})" if "neurons" in s else ""
        parts.append(f"{s['kind']}@L{s['layer']}.{s['site']}{n}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- the run


def main(build: Callable, name: str, module_name: str) -> None:
    """Read the spec, build the peer's jobs with `build(hf, edits) -> {job: (fn(ids, am, gen) -> ids, what)}`,
    time them against plain HF generate, interleaved, and print the JSON report."""
    spec = json.load(sys.stdin)
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout JSON-only whatever the peer prints
        report = _run(spec, build, module_name)
    report["peer"] = name
    json.dump(report, real_stdout)
    real_stdout.write("\n")


def _run(spec: dict, build: Callable, module_name: str) -> dict:
    import importlib
    from importlib.metadata import version

    import torch
    import transformers

    torch.set_num_threads(int(spec.get("threads", 2)))
    hf = load_model(Path(spec["model_dir"]).expanduser())
    ids = torch.tensor(spec["input_ids"], dtype=torch.long)
    am = torch.tensor(spec["attention_mask"], dtype=torch.long)
    n_new = int(spec["max_new_tokens"])
    gen = dict(max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, pad_token_id=int(spec["pad_token_id"]))

    def plain(ids, am, gen):
        with torch.inference_mode():
            return hf.generate(input_ids=ids, attention_mask=am, **gen)[:, ids.shape[1]:]

    jobs = {"plain": (plain, "HF generate, no hooks")}
    jobs.update(build(hf, spec["edits"]))

    tokens = {k: fn(ids, am, gen).tolist() for k, (fn, _) in jobs.items()}  # also the first warm-up
    run = timed_reps({k: (lambda fn=fn: fn(ids, am, gen)) for k, (fn, _) in jobs.items()},
                     int(spec.get("reps", 9)), warmup=max(0, int(spec.get("warmup", 2)) - 1),
                     max_foreign=float(spec.get("max_foreign", 0.10)), label=f"{module_name} ")
    mod = importlib.import_module(module_name)
    return {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     module_name: getattr(mod, "__version__", None) or version(module_name.replace("_", "-"))},
        "threads": torch.get_num_threads(),
        "times": run["times"],
        "foreign": run["foreign"],
        "discarded": run["discarded"],
        "tokens": tokens,
        "ran": {k: what for k, (_, what) in jobs.items()},
    }
