"""Shared by the steering peers (benchmarks/steering.py): edit specs, model loading, the timing loop.

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
import time
import warnings
from pathlib import Path
from typing import Callable

warnings.filterwarnings("ignore")


def load_model(folder: Path):
    """LlamaForCausalLM from interp's cached safetensors folder (written by transformers 5.x)."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") != "llama":
        raise SystemExit(f"steering peer: expected a llama config in {folder}, got {raw.get('model_type')!r}")
    # transformers 5 writes rope_parameters; 4.x reads rope_theta / rope_scaling.
    rope = raw.pop("rope_parameters", None) or {}
    if "rope_theta" in rope:
        raw["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        raw["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    raw.pop("dtype", None)
    raw.pop("transformers_version", None)
    config = LlamaConfig(**raw)
    model = LlamaForCausalLM(config)
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise SystemExit(f"steering peer: weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.float().eval()


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


# --------------------------------------------------------------------------- timing on a shared machine


class Contention:
    """CPU time other processes used while we ran, as a fraction of all cores (from /proc/stat).

    The same measure as benchmarks/capture.py's Foreign (this module cannot import benchmarks).
    """

    def __init__(self, children: bool = False) -> None:
        self.children = children
        self.start = self._sample()

    def _sample(self):
        import os

        try:
            f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            busy = (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        except (OSError, ValueError):
            busy = float("nan")
        t = os.times()
        own = t.children_user + t.children_system if self.children else t.user + t.system
        return busy, own, time.perf_counter()

    def fraction(self) -> float:
        import os

        b0, o0, w0 = self.start
        b1, o1, w1 = self._sample()
        return max(0.0, ((b1 - b0) - (o1 - o0)) / ((w1 - w0) * (os.cpu_count() or 1)))


def wait_quiet(limit_s: float = 180.0, window_s: float = 5.0, threshold: float = 0.10) -> float:
    """Sleep until one window of `window_s` has other processes under `threshold` CPU; seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        probe = Contention()
        time.sleep(window_s)
        if probe.fraction() < threshold:
            break
    return time.perf_counter() - t0


def timed_reps(jobs: dict, reps: int, *, warmup: int = 1, max_foreign: float = 0.10, max_tries: int | None = None,
               children: bool = False, label: str = "") -> dict:
    """Interleaved repetitions (rotating order) of zero-argument jobs, robust to other processes.

    A repetition during which other processes used more than `max_foreign` of the
    machine's CPU is abandoned at the first job that saw it (on 2 cores a contended
    2-thread generate runs 10-30× slower, so finishing the repetition would waste
    minutes) and, after waiting for a quiet moment, run again (at most `max_tries`
    repetitions in all, 2 × reps + 3 by default). Returns {"times": {job: [s, ...]},
    "foreign": [share per kept rep], "discarded": [share per rep set aside]}; if fewer
    than 3 clean repetitions were had, the contended ones are kept too (finished, so
    their times are complete; their shares say so).
    """
    keys = list(jobs)
    for _ in range(warmup):
        for k in keys:
            jobs[k]()
    max_tries = max_tries or 2 * reps + 3
    kept, contended, discarded = [], [], []
    tries = 0
    while len(kept) < reps and tries < max_tries:
        order = keys[tries % len(keys):] + keys[: tries % len(keys)]
        last_chance = tries == max_tries - 1 and len(kept) + len(contended) < min(3, reps)
        probe = Contention(children)
        t = {}
        for k in order:
            job_probe = Contention(children)
            t0 = time.perf_counter()
            jobs[k]()
            t[k] = time.perf_counter() - t0
            if job_probe.fraction() > max_foreign and not last_chance:
                break
        f = probe.fraction()
        tries += 1
        line = "  ".join(f"{k} {t[k]:.3f}s" for k in keys if k in t)
        if len(t) < len(keys) or f > max_foreign:
            if len(t) == len(keys):
                contended.append((t, f))
            discarded.append(f)
            waited = wait_quiet()
            print(f"  {label}rep {tries}: {line}  (other processes: {f:.0%} CPU — set aside; "
                  f"waited {waited:.0f}s for quiet)", file=sys.stderr, flush=True)
            continue
        kept.append((t, f))
        print(f"  {label}rep {tries}: {line}  (other processes: {f:.0%} CPU)", file=sys.stderr, flush=True)
    use = kept if len(kept) >= min(3, reps) or not contended else kept + contended
    return {"times": {k: [t[k] for t, _ in use] for k in keys}, "foreign": [f for _, f in use],
            "discarded": discarded if use is kept else []}


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
