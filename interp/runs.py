"""Long captures that survive faults and scale out: shard, checkpoint, resume, merge.

`stream(run, docs, …)` feeds this process's shard of a corpus (whole batches of the one-process
plan, `shard_batches`) through a `CaptureRun`. With a
`Checkpoint`, every `every` batches it writes each reducer's state, the batches done and the
tokens seen to `folder/rank-R-of-W.safetensors` (atomically: a kill leaves the previous
checkpoint whole); `resume=True` loads it and skips the batches it holds, so a killed run
resumed gives the same reducers as an uninterrupted one (batch order is deterministic, sums add
in the same order). A fingerprint of the run (model, sites, reducers, documents, batching,
world size) guards against resuming a different run. At the end, every rank's reducers merge
into rank 0's (`interp.distributed.gather_reducers`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .cache import atomic_path
from .capture import CaptureRun, _as_docs, plan
from .distributed import gather_reducers, world
from .errors import InterpError


class CheckpointError(InterpError):
    """A checkpoint that is unreadable, from another run, or in the way of a fresh run."""


@dataclass
class Checkpoint:
    """Where and how often a run saves its reducers; `resume` continues from what is there."""

    folder: Path
    every: int = 50  # batches between checkpoints
    resume: bool = False

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if self.every < 1:
            raise CheckpointError(f"checkpoint every {self.every} batches: must be at least 1")

    def file(self, rank: int, size: int) -> Path:
        return self.folder / f"rank-{rank}-of-{size}.safetensors"

    def discard(self) -> None:
        """Remove the checkpoint folder (after the run's results are safely written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def fingerprint(run: CaptureRun, docs, indices: Sequence[int], batch_size: int, max_length: int) -> str:
    """What makes two runs the same run: the model, sites, reducers, documents and batching."""
    h = hashlib.sha256()
    head = {"model": run.model.name, "revision": run.model.revision, "dtype": str(run.model.dtype),
            "sites": [p.name for p in run.points], "groups": run.groups, "words": run.words,
            "reducers": [[r.kind, r.settings()] for r in run.reducers], "batch_size": batch_size,
            "max_length": max_length, "world": world()[1], "indices": list(indices)}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for d in docs:
        h.update(json.dumps([d.text, d.prompt, d.group], default=str).encode())
    return h.hexdigest()


def save_checkpoint(path: Path, run: CaptureRun, batches: int, stamp: str) -> None:
    """Every reducer's state (tensors `r{i}/{site}/{name}`) and the progress, in one safetensors file."""
    from safetensors.torch import save_file

    tensors = reducer_tensors(run)
    meta = {"fingerprint": stamp, "batches": batches, "tokens_seen": run.tokens_seen,
            "reducers": [r.metadata() for r in run.reducers]}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"interp-checkpoint": json.dumps(meta)})


def load_checkpoint(path: Path, run: CaptureRun, stamp: str) -> int:
    """Load reducer states and tokens seen into `run`; returns the batches already done."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["interp-checkpoint"])
        tensors = load_file(str(path))
    except (OSError, KeyError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}); delete it to start "
                              "over") from None
    if meta.get("fingerprint") != stamp:
        raise CheckpointError(f"{path} belongs to another run (model, sites, corpus or batching differ); delete "
                              "it or rerun the same command")
    if len(meta["reducers"]) != len(run.reducers):
        raise CheckpointError(f"{path} holds {len(meta['reducers'])} reducers, this run has {len(run.reducers)}")
    for i, (r, m) in enumerate(zip(run.reducers, meta["reducers"])):
        mine = {k[len(f"r{i}/"):]: v for k, v in tensors.items() if k.startswith(f"r{i}/")}
        r.load_tensors(m, mine)
    run.tokens_seen = int(meta["tokens_seen"])
    return int(meta["batches"])


def shard_batches(docs, batch_size: int, rank: int, size: int) -> list[int]:
    """The documents of batches rank, rank + size, … of the one-process plan (`capture.plan`): each
    rank then runs exactly the batches the one-process run would, so counts match it bit for bit
    and sums differ only in the order they are added."""
    return [i for batch in plan(docs, batch_size)[rank::size] for i in batch]


def stream(run: CaptureRun, corpus, *, batch_size: int = 8, max_length: int = 512, progress: bool = True,
           checkpoint: Checkpoint | None = None, merge: bool = True) -> CaptureRun:
    """Feed this rank's shard of `corpus` through `run`, checkpointing and resuming as asked, then
    merge all ranks' reducers into rank 0's (`merge`). One process: the whole corpus."""
    docs = _as_docs(corpus)
    rank, size = world()
    indices = shard_batches(docs, batch_size, rank, size)
    skip, after = 0, None
    if checkpoint is not None:
        path = checkpoint.file(rank, size)
        stamp = fingerprint(run, docs, indices, batch_size, max_length)
        if checkpoint.resume and path.exists():
            skip = load_checkpoint(path, run, stamp)
        elif not checkpoint.resume and path.exists():
            raise CheckpointError(f"an unfinished run left a checkpoint in {checkpoint.folder}; add --resume to "
                                  "continue it, or delete the folder to start over")

        def after(n: int) -> None:
            if n % checkpoint.every == 0:
                save_checkpoint(path, run, n, stamp)

    run.feed(docs, batch_size=batch_size, max_length=max_length, progress=progress, indices=indices, skip=skip,
             after_batch=after)
    if merge:
        gather_reducers(run.reducers)
    return run


def reducer_tensors(run: CaptureRun) -> dict[str, torch.Tensor]:
    """Every reducer's tensors as one flat dict: {"r{i}/{site}/{name}": tensor}."""
    return {f"r{i}/{k}": v for i, r in enumerate(run.reducers) for k, v in r.tensors().items()}
