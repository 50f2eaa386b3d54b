"""The command line of the entry points: config files and overrides checked before absl parses
them, for a clear error on a typo, and user errors reported in one line."""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
import sys
from typing import Callable

from ml_collections import config_dict


def load_config_module(path: str):
    """Imports a config file (configs/NAME.py) by path, as ml_collections' config_flags does."""
    module_spec = importlib.util.spec_from_file_location("ssl_jax_config_" + os.path.basename(path)[:-3], path)
    if module_spec is None or not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config_file(spec: str) -> config_dict.ConfigDict:
    """Loads `path/to/config.py[:arg]` as ml_collections' config_flags would."""
    path, _, arg = spec.partition(":")
    module = load_config_module(path)
    return module.get_config(arg) if arg else module.get_config()


def unknown_override(config: config_dict.ConfigDict, dotted: str) -> str | None:
    """None when `dotted` (e.g. "train.steps") names a field, else an error message."""
    node, walked = config, []
    for part in dotted.split("."):
        if isinstance(node, (config_dict.ConfigDict, dict)) and part in node:
            node = node[part]
            walked.append(part)
            continue
        if isinstance(node, (config_dict.ConfigDict, dict)):
            where = ".".join(walked) or "the config"
            return f"unknown config field {dotted!r}: {where} has no field {part!r}; valid fields: {sorted(node.keys())}"
        return f"unknown config field {dotted!r}: {'.'.join(walked)} is a value, not a group"
    return None


def check_overrides(argv: list[str], flag: str = "config") -> None:
    """Exits with status 2 and a clear message if the `--config` file does not exist or a
    `--config.x.y=` override names no field."""
    spec, overrides = None, []
    for i, a in enumerate(argv[1:], start=1):
        if a.startswith(f"--{flag}="):
            spec = a.split("=", 1)[1]
        elif a == f"--{flag}" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif a.startswith(f"--{flag}."):
            overrides.append(a[len(flag) + 3 :].split("=", 1)[0])
    if spec is None:
        return
    try:
        config = load_config_file(spec)
    except FileNotFoundError as e:
        print(f"error: --{flag}: {e}", file=sys.stderr)
        sys.exit(2)
    for dotted in overrides:
        message = unknown_override(config, dotted)
        if message:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)


# Errors a user fixes at the command line (a file or folder that is not there): one line, no traceback.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


# A full disk or quota (a checkpoint or log that cannot be written): one line, exit status 1.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def user_errors(main: Callable) -> Callable:
    """Wraps an entry point's `main`: a `USER_ERRORS` exception ends the program with its message
    on one line (`error: ...`) and exit status 2 instead of a traceback; an OSError for a full
    disk (`FULL_DISK`) or a dead data worker (`pipeline.DataWorkerError`) does the same with status 1."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        except OSError as e:
            if e.errno not in FULL_DISK:
                raise
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
        except RuntimeError as e:
            from ssl_jax.data.pipeline import DataWorkerError

            if not isinstance(e, DataWorkerError):
                raise
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapped


def run_upstream_command(fn, config_help: str, upstream_help: str) -> None:
    """Runs `fn(config, upstream, workdir)` as an absl program with `--config/--upstream/--workdir`.

    The shared entry point of `ssl_jax.evaluate` and `ssl_jax.finetune`: overrides are checked
    first, so a misspelled `--config.x.y` is a clear error naming the valid fields.
    `--upstream_normalize=auto|true|false` reaches `fn` as the keyword `upstream_normalize`
    (None, True, False) when `fn` has that parameter; a command without it accepts only `auto`.
    """
    import inspect
    import logging

    from absl import app, flags
    from ml_collections import config_flags

    check_overrides(sys.argv)
    config = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    upstream = flags.DEFINE_string("upstream", None, upstream_help)
    workdir = flags.DEFINE_string("workdir", None, "output folder")
    normalize = flags.DEFINE_enum(
        "upstream_normalize", "auto", ["auto", "true", "false"],
        "per-utterance waveform normalisation of the upstream: auto = the checkpoint's own flag",
    )
    flags.mark_flags_as_required(["config", "upstream", "workdir"])
    takes_normalize = "upstream_normalize" in inspect.signature(fn).parameters

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        kwargs = {}
        if takes_normalize:
            kwargs["upstream_normalize"] = {"auto": None, "true": True, "false": False}[normalize.value]
        elif normalize.value != "auto":
            raise app.UsageError("--upstream_normalize is not supported by this command")
        logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-restore chatter
        fn(config.value, upstream.value, workdir.value, **kwargs)

    app.run(user_errors(main))
