"""Data-parallel capture over torch.distributed (issue 13, first part).

Each process captures its own shard of the corpus (whole batches of the one-process run,
`interp.runs.shard_batches`, keeping their global document indices so top-k exemplars point
into the whole corpus) into its own reducers; `gather_reducers` then merges every rank's
reducers into rank 0's. Reducers travel as
safetensors bytes with a JSON header (never pickled), so any reducer merges, on any backend
that can gather a byte tensor (gloo on CPUs, NCCL on GPUs), across hosts. Without an
initialised process group everything is the one-process identity.

    torchrun --nproc-per-node 2 -m cli.main analyze ...      (or accelerate launch)
"""

from __future__ import annotations

import json
from typing import Sequence

import torch

from .errors import InterpError
from .reducers import REDUCERS, Reducer


def world() -> tuple[int, int]:
    """(rank, world size) of the current process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _to_bytes(r: Reducer) -> torch.Tensor:
    from safetensors.torch import save

    meta = json.dumps(r.metadata()).encode()
    blob = save(r.tensors()) if r.state else b""
    head = len(meta).to_bytes(8, "little")
    return torch.frombuffer(bytearray(head + meta + blob), dtype=torch.uint8)


def _from_bytes(data: torch.Tensor) -> Reducer:
    from safetensors.torch import load

    raw = bytes(data.numpy())
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n].decode())
    if meta.get("kind") not in REDUCERS:
        raise InterpError(f"received an unknown reducer kind {meta.get('kind')!r}")
    r = REDUCERS[meta["kind"]](**meta.get("settings", {}))
    r.load_tensors(meta, load(raw[8 + n:]) if len(raw) > 8 + n else {})
    return r


def _gather_bytes(data: torch.Tensor, device) -> list[torch.Tensor] | None:
    """Every rank's byte tensor on rank 0 (None elsewhere); lengths are exchanged first."""
    import torch.distributed as dist

    rank, size = world()
    length = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(length) for _ in range(size)]
    dist.all_gather(lengths, length)
    longest = int(max(int(x) for x in lengths))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data.to(device)
    bufs = [torch.zeros_like(padded) for _ in range(size)] if rank == 0 else None
    dist.gather(padded, bufs, dst=0)
    if rank != 0:
        return None
    return [b[: int(n)].cpu() for b, n in zip(bufs, lengths)]


def gather_reducers(reducers: Sequence[Reducer], *, device: str | torch.device = "cpu") -> None:
    """Merge every rank's reducers into rank 0's, in place (rank order, so results are deterministic).
    Other ranks keep their own shard's state. A no-op in one process. `device`: where the byte
    buffers travel (cpu for gloo; the rank's GPU for NCCL)."""
    rank, size = world()
    if size == 1:
        return
    for r in reducers:
        parts = _gather_bytes(_to_bytes(r), device)
        if rank != 0:
            continue
        for part in parts[1:]:
            other = _from_bytes(part)
            if not other.state:  # a rank whose shard was empty
                continue
            if not r.state:
                r.groups = list(other.groups)
            r.merge(other)


def sum_over_ranks(value: int | float) -> float:
    """The sum of a number over all ranks (the value itself in one process)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def init_from_env() -> tuple[int, int]:
    """Join the process group a launcher (torchrun, accelerate launch) describes in the environment
    (WORLD_SIZE > 1): gloo on CPUs, NCCL when this rank has a GPU. Returns (rank, world size)."""
    import os

    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()
