"""Helpers for the notebooks in `notebooks/`: run the project's commands from a cell.

The notebooks drive ssl_jax the way a user's shell does (`python -m ssl_jax.train ...`, the
command-line contract), so what they show is what the commands do.
"""

from __future__ import annotations

import codecs
import os
import shlex
import subprocess
import sys


def run(command: str) -> None:
    """Runs `python -m COMMAND` with this kernel's interpreter, echoing its output as it comes
    (progress bars included); raises RuntimeError when it fails.

    Args:
        command: the arguments after `python -m`, as typed in a shell.
    """
    print(f"$ python -m {command}", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", *shlex.split(command)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    text = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span two reads
    while chunk := os.read(proc.stdout.fileno(), 4096):
        sys.stdout.write(text.decode(chunk))
        sys.stdout.flush()
    if proc.wait():
        raise RuntimeError(f"`python -m {command}` failed with exit status {proc.returncode} (output above)")
