"""Orbax checkpoints: the training CheckpointManager and the pretrained-weights format.

A checkpoint lives in `WORKDIR/checkpoints/<step>/` and holds three items: `state` (the
train-state pytree; its `params` entry is `{"encoder": ..., <objective heads>}`), `data`
(the data iterator's state, JSON) and `config` (the full config, JSON). A converted or
exported model is the same layout at step 0 with `state = {"params": params}` only.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

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


class CheckpointManager:
    """Async, keep-N Orbax checkpoints of (train state, data iterator state, config).

    Args:
        workdir: run folder; checkpoints go to `workdir/checkpoints/<step>/`.
        save_every: save interval in steps (`save(force=True)` overrides it).
        keep: number of most recent checkpoints kept.
        async_save: write in a background thread (the call returns once arrays are copied).
    """

    def __init__(self, workdir: str, *, save_every: int = 1, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(save_every), 1),
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any, config: Any, *, force: bool = False) -> bool:
        """Saves (asynchronously) if `step` is due or `force`; returns whether a save started."""
        if step in self._manager.all_steps():
            return False
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(_jsonable({"iterator": data_state})),
            config=ocp.args.JsonSave(config_to_dict(config)),
        )
        return bool(self._manager.save(int(step), args=args, force=force))

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, Any, dict]:
        """Restores `(state, data_state, config)` at `step` (latest when None).

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
        return restored["state"], _unjsonable(restored["data"])["iterator"], restored["config"]

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


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
