"""How `interp analyze` runs: on several processes (a launcher), with checkpoints, under an output lock.

- `--launcher torchrun|accelerate --processes N [--launcher-args "…"]` re-runs the same command
  under that launcher (data-parallel probes: stats, language-neurons, milan); `--launcher-args`
  passes multi-host settings through (torchrun: `--nnodes 2 --node-rank 0 --rdzv-endpoint
  HOST:PORT`; accelerate: `--num_machines 2 --machine_rank 0 --main_process_ip HOST`).
- `--checkpoint-every N` batches (default 50; 0: never) saves reducer state beside `--out`
  (`.<out>.checkpoint/`); `--resume` continues a killed run from it.
- One run at a time writes an output folder: an exclusive lock `.<out>.lock` beside it.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from interp.errors import InterpError
from cli.argtypes import count, positive

DATA_PARALLEL = ("stats", "language-neurons", "milan")
LAUNCHERS = ("torchrun", "accelerate")


def add_options(group) -> None:
    group.add_argument("--launcher", choices=LAUNCHERS,
                       help="run data-parallel (--probe stats, language-neurons, milan): re-run this command "
                            "under torchrun or accelerate launch with --processes processes; rank 0 writes --out")
    group.add_argument("--processes", type=positive, default=2, metavar="N",
                       help="processes per host for --launcher (default 2; one per GPU on GPU hosts)")
    group.add_argument("--launcher-args", default="", metavar="ARGS",
                       help="more launcher options, quoted, e.g. multi-host: torchrun '--nnodes 2 --node-rank 0 "
                            "--rdzv-endpoint HOST:29500', accelerate '--num_machines 2 --machine_rank 0 "
                            "--main_process_ip HOST'")
    group.add_argument("--checkpoint-every", type=count, default=50, metavar="N",
                       help="save the capture's state every N batches beside --out (default 50; 0: never)")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from its checkpoint (same command otherwise)")


def checkpoint_for(args, out: Path):
    """The capture checkpoint beside `out`, or None with --checkpoint-every 0 (and no --resume)."""
    from interp.runs import Checkpoint

    if args.checkpoint_every < 0:
        raise InterpError(f"--checkpoint-every must be 0 (never) or a number of batches, not {args.checkpoint_every}")
    if args.checkpoint_every == 0 and not args.resume:
        return None
    return Checkpoint(out.parent / f".{out.name}.checkpoint", every=args.checkpoint_every or 50, resume=args.resume)


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold `.<out>.lock` exclusively for the run; a second run on the same --out fails at once."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.lock"
    busy = InterpError(f"another interp run is writing {out} (it holds {lock}); wait for it or choose another --out")
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        if not lock.exists() or os.stat(lock).st_ino != os.fstat(f.fileno()).st_ino:
            raise busy  # its holder finished and removed it between our open and our lock; another run may hold a new one
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # removed while still held, so no one can lock the old file after us
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(launcher: str, processes: int, extra: str, argv: list[str]) -> list[str]:
    """The command that runs `interp <argv>` (the launcher options removed) under `launcher`."""
    if processes < 1:
        raise InterpError(f"--processes must be at least 1, not {processes}")
    try:
        more = shlex.split(extra)
    except ValueError as exc:
        raise InterpError(f"bad --launcher-args {extra!r}: {exc}") from None
    inner = _without_launcher(argv)
    if launcher == "torchrun":
        rdzv = [] if any(a.startswith(("--rdzv", "--nnodes", "--master")) for a in more) else ["--standalone"]
        return [sys.executable, "-m", "torch.distributed.run", *rdzv, "--nproc-per-node", str(processes), *more,
                "-m", "cli.main", *inner]
    port = [] if any(a.startswith("--main_process_port") for a in more) else ["--main_process_port", str(_free_port())]
    machines = [] if any(a.startswith("--num_machines") for a in more) else ["--num_machines", "1"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            *machines, "--mixed_precision", "no", "--dynamo_backend", "no", *port, *more, "-m", "cli.main", *inner]


def _without_launcher(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in ("--launcher", "--processes", "--launcher-args"):
            skip = "=" not in a
            continue
        out.append(a)
    return out


def launch(args) -> int:
    """Run this command (a data-parallel probe: the caller checks) under --launcher; its exit code. The
    ranks' output passes through as it comes; when a rank fails on bad input, its one-line error is
    shown once (every rank prints it) and the launcher's own failure report (a traceback of its
    child-process bookkeeping) is held back: exit 2."""
    cmd = launcher_command(args.launcher, args.processes, args.launcher_args, args.argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if not args.quiet:
        print("running: " + shlex.join(cmd), file=sys.stderr)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    errors: list[str] = []

    def show(piece: bytes) -> None:
        text = piece.decode("utf-8", errors="replace")
        if "interp: error:" in text:
            message = text[text.index("interp: error:"):].strip()
            if message not in errors:
                errors.append(message)
                print(message, file=sys.stderr, flush=True)
        elif not errors:
            sys.stderr.write(text)
            sys.stderr.flush()

    pending = b""
    for chunk in iter(lambda: proc.stderr.read1(1 << 16), b""):
        *pieces, pending = re.split(rb"(?<=[\r\n])", pending + chunk)  # whole lines (and progress-bar updates)
        for piece in pieces:
            show(piece)
    show(pending)
    code = proc.wait()
    return 2 if errors else code
