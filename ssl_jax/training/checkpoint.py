"""Orbax checkpoints: the training CheckpointManager and the pretrained-weights format.

A checkpoint lives in `WORKDIR/checkpoints/<step>/` and holds three items: `state` (the
train-state pytree; its `params` entry is `{"encoder": ..., <objective heads>}`), `data`
(JSON: the data iterator's state and the number of rollbacks behind it, which selects the data
seed) and `config` (the full config, JSON). A converted or exported model is the same layout at
step 0 with `state = {"params": params}` only.

Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it when every item is on
disk, so a save cut short (a kill, a full disk) leaves a folder that neither `latest_step`
nor `resolve_step_dir` takes, and it never deletes older steps before the new one is finished.
A failed save is raised as `CheckpointSaveError`, one line naming the workdir.
"""

from __future__ import annotations

import base64
import errno
import json
import os
from typing import Any, NamedTuple, NoReturn

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

ITEMS = ("state", "data", "config")


def _jsonable(tree: Any) -> Any:
    """Makes an iterator state / config JSON-safe (bytes -> tagged base64, numpy -> python)."""
    if isinstance(tree, dict):
        return {str(k): _jsonable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_jsonable(v) for v in tree]
    if isinstance(tree, bytes):
        return {"__bytes__": base64.b64encode(tree).decode("ascii")}
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, np.ndarray):
        return tree.tolist()
    return tree


def _unjsonable(tree: Any) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"__bytes__"}:
            return base64.b64decode(tree["__bytes__"])
        return {k: _unjsonable(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unjsonable(v) for v in tree]
    return tree


def config_to_dict(config: Any) -> dict:
    """A ConfigDict (or dict) as a plain JSON-safe dict."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return _jsonable(dict(config))


class CheckpointSaveError(OSError):
    """A checkpoint could not be written. The message is one line; `errno` is ENOSPC (or
    EDQUOT) when the disk or quota is full, None otherwise."""


_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# TensorStore (the array writer) reports the OS error inside a ValueError's text.
_FULL_TEXT = {"no space left on device": errno.ENOSPC, "os_error_code='28'": errno.ENOSPC,
              "disk quota exceeded": errno.EDQUOT}


def disk_full(error: BaseException) -> int | None:
    """ENOSPC or EDQUOT when `error` (or an exception it was raised from) says the disk or the
    quota is full, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _FULL:
            return error.errno
        text = str(error).lower()
        for needle, code in _FULL_TEXT.items():
            if needle in text:
                return code
        error = error.__cause__ or error.__context__
    return None


class Restored(NamedTuple):
    """What `CheckpointManager.restore` returns."""

    state: Any  # the train-state pytree, laid out as the abstract state asked
    data: Any  # the data iterator's state
    config: dict
    rollbacks: int  # rollbacks in the run's history at that step (0 for checkpoints before them)


class CheckpointManager:
    """Async, keep-N Orbax checkpoints of (train state, data iterator state, config).

    Args:
        workdir: run folder; checkpoints go to `workdir/checkpoints/<step>/`.
        save_every: save interval in steps (`save(force=True)` overrides it).
        keep: number of most recent checkpoints kept.
        async_save: write in a background thread (the call returns once arrays are copied).
    """

    def __init__(self, workdir: str, *, save_every: int = 1, keep: int = 3, async_save: bool = True):
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self._save_every = max(int(save_every), 1)
        self._saving: int | None = None  # the step of the last save started
        self._failure: CheckpointSaveError | None = None
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=self._save_every,
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any, config: Any, *, force: bool = False,
             rollbacks: int = 0) -> bool:
        """Saves (asynchronously) if `step` is due or `force`; returns whether a save started.

        `rollbacks` is stored beside the data iterator's state (`Restored.rollbacks`). Raises
        `CheckpointSaveError` if this save or the previous one (which it waits for) failed.
        """
        if step in self._manager.all_steps() or not (force or step % self._save_every == 0):
            return False
        self.wait()  # Orbax's save would wait for the previous one too; its failure is reported as its own
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(_jsonable({"iterator": data_state, "rollbacks": int(rollbacks)})),
            config=ocp.args.JsonSave(config_to_dict(config)),
        )
        try:
            started = bool(self._manager.save(int(step), args=args, force=force))
        except Exception as e:  # the blocking part of this save (directories, metadata, arrays to host)
            self._raise(e, step)
        if started:
            self._saving = int(step)
        return started

    def restore(self, abstract_state: Any, step: int | None = None) -> Restored:
        """Restores `(state, data, config, rollbacks)` at `step` (latest when None).

        Args:
            abstract_state: pytree of `jax.ShapeDtypeStruct` with shardings (from `jax.eval_shape`
                plus the sharding rules): arrays come back laid out as the running job wants.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
            ),
        )
        data = _unjsonable(restored["data"])
        return Restored(restored["state"], data["iterator"], restored["config"], int(data.get("rollbacks", 0)))

    def rollbacks(self, step: int) -> int:
        """The rollbacks stored with the checkpoint of `step` (its data item only is read)."""
        with open(os.path.join(self.directory, str(int(step)), "data", "metadata"), encoding="utf-8") as f:
            return int(json.load(f).get("rollbacks", 0))

    def delete_after(self, step: int) -> list[int]:
        """Deletes the checkpoints of steps after `step` (once pending saves are done); returns them."""
        self.wait()
        later = [s for s in self.all_steps() if s > step]
        for s in later:
            self._manager.delete(s)
        return later

    def failed(self) -> bool:
        """Whether a background save has finished with an error, without waiting for one in
        progress; `wait` (or the next `save`) raises it."""
        if self._failure is None and self._saving is not None and not self._manager.is_saving_in_progress():
            try:
                self._manager.wait_until_finished()  # finished: returns at once, or raises its error
            except Exception as e:
                self._record(e, self._saving)
        return self._failure is not None

    def wait(self) -> None:
        """Blocks until pending async saves are on disk; raises `CheckpointSaveError` if one failed."""
        self._raise_failure()
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            self._raise(e, self._saving)

    def close(self) -> None:
        self.wait()
        self._manager.close()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _record(self, error: Exception, step: int | None) -> CheckpointSaveError:
        """The one-line `CheckpointSaveError` for a failed save of `step`, kept for later calls."""
        self._manager.reload()  # Orbax forgot the failed step and the ones it meant to replace
        intact = self.latest_step()
        code = disk_full(error)
        what = _FULL[code] if code else " ".join([type(error).__name__ + ":", *str(error).strip().splitlines()[:1]])
        where = f"could not write the checkpoint of step {step} under {self.workdir}: {what}"
        if intact is None:
            after = "; there is no earlier checkpoint"
        else:
            after = f"; the checkpoint of step {intact} is intact and the same command resumes from it"
        if code:
            after += " once space is freed"
        failure = CheckpointSaveError(where + after)
        failure.errno = code
        # A full disk needs no traceback (Orbax has logged the writer's); any other failure keeps its cause.
        failure.__cause__, failure.__suppress_context__ = (None if code else error), True
        self._failure = failure
        return failure

    def _raise(self, error: Exception, step: int | None) -> NoReturn:
        raise self._record(error, step)


def save_pretrained(out_dir: str, params: Any, config: Any) -> str:
    """Writes `params` and `config` as a step-0 checkpoint under `out_dir/checkpoints/0`.

    Args:
        out_dir: target folder (a workdir-like layout, so `load_pretrained(out_dir)` works).
        params: `{"encoder": <SpeechEncoder params>, ...}`.
        config: the full config (dict or ConfigDict); `config["model"]` builds the encoder.
    Returns:
        The step folder written.
    """
    directory = os.path.abspath(os.path.join(out_dir, "checkpoints"))
    params = jax.tree.map(np.asarray, params)
    manager = ocp.CheckpointManager(
        directory,
        item_names=("state", "config"),
        options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
    )
    manager.save(
        0,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave({"params": params}),
            config=ocp.args.JsonSave(config_to_dict(config)),
        ),
        force=True,
    )
    manager.wait_until_finished()
    manager.close()
    return os.path.join(directory, "0")


def resolve_step_dir(path: str) -> str:
    """A workdir, its `checkpoints` folder or a step folder -> the (latest) step folder."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(os.path.join(path, "state")):
        return path
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    steps = [int(d) for d in os.listdir(path) if d.isdigit() and os.path.isdir(os.path.join(path, d, "state"))] if os.path.isdir(path) else []
    if not steps:
        raise FileNotFoundError(f"no checkpoint found at {path!r} (expected a workdir, its checkpoints/ folder or a step folder)")
    return os.path.join(path, str(max(steps)))


def load_state(path: str) -> tuple[dict, dict]:
    """Loads `(state, config)` from a workdir, its `checkpoints` folder or a step folder: the
    whole train state (`step`, `params`, `opt_state`, ...) as host numpy arrays, whatever mesh
    wrote them."""
    step_dir = resolve_step_dir(path)
    with open(os.path.join(step_dir, "config", "metadata"), encoding="utf-8") as f:
        config = json.load(f)
    state_dir = epath.Path(step_dir) / "state"
    tree = ocp.PyTreeCheckpointHandler().metadata(state_dir).tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    with ocp.PyTreeCheckpointer() as checkpointer:
        state = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return state, config


def load_pretrained(path: str) -> tuple[Any, dict]:
    """Loads `(params, config)` from a workdir, its `checkpoints` folder or a step folder.

    Parameters come back as host numpy arrays (float32 as saved), whatever mesh wrote them.
    """
    state, config = load_state(path)
    if "params" not in state:
        raise ValueError(f"{resolve_step_dir(path)}: the state item has no 'params' entry")
    return state["params"], config
