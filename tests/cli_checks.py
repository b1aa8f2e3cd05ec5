"""Running the `interp` command in tests: in-process through `cli.main.main`, or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(argv: list[str], capsys, *, real: bool = False) -> tuple[int, str, str]:
    """(exit code, stdout, stderr). `real`: a new `python -m cli.main` (the entry point end to end, one
    interpreter start-up); else the same `main()` in this process, its output read through `capsys`."""
    if real:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-m", "cli.main", *argv], capture_output=True, text=True, env=env)
        return proc.returncode, proc.stdout, proc.stderr
    from cli.main import main

    try:
        code = main(argv)
    except SystemExit as exc:  # an argparse exit that main() did not turn into a code
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
