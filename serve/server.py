"""Running the app under uvicorn: in the foreground (`interp serve`) or on a background thread (tests, notebooks).

SIGTERM (or Ctrl-C) stops taking connections, lets in-flight requests finish for up to
`graceful_s` seconds, cancels the rest, then stops the engine and removes every hook.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn


def config(api, host: str = "127.0.0.1", port: int = 8000, graceful_s: float = 10.0) -> uvicorn.Config:
    return uvicorn.Config(api, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful_s,
                          lifespan="on")


def run(api, host: str = "127.0.0.1", port: int = 8000, graceful_s: float = 10.0) -> None:
    """Serve until SIGTERM / SIGINT (blocking); a graceful stop returns normally (exit code 0)."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises the signal after shutting down
    try:
        uvicorn.Server(config(api, host, port, graceful_s)).run()
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def background(api, host: str = "127.0.0.1", port: int = 0, graceful_s: float = 5.0,
               start_timeout_s: float = 120.0) -> Iterator[str]:
    """Serve on a thread; yields the base URL (port 0: a free port); stops and joins on exit."""
    server = uvicorn.Server(config(api, host, port, graceful_s))
    thread = threading.Thread(target=server.run, name="interp-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the server did not start (see the log above)")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=graceful_s + 30)
