"""What the demo shows when something goes wrong: one line for the user, the traceback for the server.

Bad input (`InterpError`, which includes the demo's own `DemoError`) is the user's to fix: its
message is shown as it is, on one line, and not logged as an error. Anything else is a bug: its
traceback goes to the server's log (logger "demo") under a short reference, and the user sees
one line naming the reference, never the traceback or the exception's text (which can hold
server paths).
"""

from __future__ import annotations

import logging
import uuid

from interp.errors import InterpError

log = logging.getLogger("demo")
MAX_MESSAGE_CHARS = 300


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` with its whitespace runs (newlines included) collapsed, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def user_message(exc: BaseException, where: str) -> str:
    """The one line to show for `exc`, raised in the handler named `where`; logs bugs with their traceback."""
    if isinstance(exc, InterpError):
        return one_line(str(exc))
    ref = uuid.uuid4().hex[:8]
    log.error("internal error %s in %s", ref, where, exc_info=exc)
    return f"Internal error ({type(exc).__name__}, reference {ref}); it is logged on the server. Try other input."
