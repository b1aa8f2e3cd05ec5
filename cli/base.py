"""What every command module of the `interp` CLI shares: the one-line-error parser and `error`."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (exit 2), not usage + message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def error(message: str) -> Exception:
    """The exception `main` prints as one line and turns into exit code 2."""
    from interp.errors import InterpError  # imported late: `interp --help` stays fast

    return InterpError(message)
