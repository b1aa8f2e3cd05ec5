"""Shared by the benchmarks and the peer scripts: loading the cached model, timing on a shared machine.

Peer scripts run in their own venvs (transformers 4.x), where interp cannot be
imported, so this module uses only torch, transformers and safetensors.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def load_model(folder: Path):
    """LlamaForCausalLM from interp's cached safetensors folder (written by transformers 5.x)."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") != "llama":
        raise SystemExit(f"peer: expected a llama config in {folder}, got {raw.get('model_type')!r}")
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
        raise SystemExit(f"peer: weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.float().eval()


# --------------------------------------------------------------------------- timing on a shared machine


class Contention:
    """CPU time other processes used while we ran, as a fraction of all cores (from /proc/stat).

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
