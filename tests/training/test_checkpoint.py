"""Tests for ssl_jax/training/checkpoint.py: round trips, keep-N, path resolution, sharded restore,
a full disk during a save."""

import errno
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.training import checkpoint as ck


def _params(offset: float = 0.0):
    return {"encoder": {"w": jnp.ones((4, 3)) + offset, "b": jnp.zeros(3) + offset}, "quantizer": {"c": jnp.arange(6.0) + offset}}


def test_save_and_load_pretrained_round_trip(tmp_path):
    params = _params(1.5)
    step_dir = ck.save_pretrained(str(tmp_path / "pre"), params, {"model": {"hidden_size": 8, "conv_dim": (4, 4)}})
    assert os.path.isdir(os.path.join(step_dir, "state"))
    for path in (tmp_path / "pre", tmp_path / "pre" / "checkpoints", step_dir):
        loaded, config = ck.load_pretrained(str(path))
        assert config == {"model": {"hidden_size": 8, "conv_dim": [4, 4]}}
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params, loaded)
        assert isinstance(loaded["encoder"]["w"], np.ndarray)


def test_load_pretrained_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ck.load_pretrained(str(tmp_path))


def test_manager_keeps_latest_and_restores_sharded(tmp_path):
    manager = ck.CheckpointManager(str(tmp_path), save_every=1, keep=2)
    data_state = {"epoch": 1, "blob": b"\x00\xffabc", "nested": [1, {"x": np.int64(3)}]}
    for step in range(1, 5):
        state = {"params": _params(step), "step": jnp.asarray(step)}
        assert manager.save(step, state, data_state, {"seed": step})
    manager.wait()
    assert manager.all_steps() == [3, 4]
    assert not manager.save(4, state, data_state, {"seed": 4}, force=True)  # already there

    mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), jax.eval_shape(lambda: state))
    restored, restored_data, config, rollbacks = manager.restore(abstract)
    manager.close()
    assert int(restored["step"]) == 4
    assert restored["params"]["encoder"]["w"].sharding == replicated
    np.testing.assert_array_equal(restored["params"]["quantizer"]["c"], np.arange(6.0) + 4)
    assert restored_data == {"epoch": 1, "blob": b"\x00\xffabc", "nested": [1, {"x": 3}]}
    assert config == {"seed": 4} and rollbacks == 0
    params, _ = ck.load_pretrained(str(tmp_path))
    np.testing.assert_array_equal(params["encoder"]["b"], np.full(3, 4.0))


def _disk_full_in_background(monkeypatch):
    """The JSON items of the next saves fail as a full disk does: OSError(ENOSPC) from the file
    write, in Orbax's background commit, after the arrays went out."""
    from orbax.checkpoint import handlers

    async def full(self, x, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))

    monkeypatch.setattr(handlers.JsonCheckpointHandler, "_save_fn", full)


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    manager = ck.CheckpointManager(str(tmp_path), save_every=1, keep=1)  # keep=1: the old one is next to go
    assert manager.save(1, {"params": _params(1.0)}, {"pos": 1}, {"seed": 1})
    manager.wait()
    _disk_full_in_background(monkeypatch)
    assert manager.save(2, {"params": _params(2.0)}, {"pos": 2}, {"seed": 1})  # asynchronous: fails later
    deadline = time.time() + 30
    while not manager.failed():  # polled without waiting, as the trainer does
        assert time.time() < deadline
        time.sleep(0.05)
    for call in (manager.wait, lambda: manager.save(3, {"params": _params(3.0)}, {"pos": 3}, {"seed": 1}), manager.close):
        with pytest.raises(ck.CheckpointSaveError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and info.value.errno == errno.ENOSPC
        assert str(tmp_path) in message and "no space left on device" in message
        assert "step 2" in message and "step 1 is intact" in message and info.value.__cause__ is None
    assert manager.latest_step() == 1

    monkeypatch.undo()
    # The unfinished step 2 is left as Orbax's temporary folder, which nothing takes for a checkpoint.
    left = sorted(os.listdir(tmp_path / "checkpoints"))
    assert left[0] == "1" and left[1:] and all(d.startswith("2.orbax-checkpoint-tmp") for d in left[1:]), left
    fresh = ck.CheckpointManager(str(tmp_path))
    assert fresh.latest_step() == 1 and fresh.all_steps() == [1]
    abstract = jax.eval_shape(lambda: {"params": _params()})
    restored = fresh.restore(abstract)
    np.testing.assert_array_equal(restored.state["params"]["quantizer"]["c"], np.arange(6.0) + 1.0)
    assert restored.data == {"pos": 1} and restored.rollbacks == 0
    assert ck.resolve_step_dir(str(tmp_path)).endswith(os.path.join("checkpoints", "1"))
    assert fresh.save(2, {"params": _params(2.0)}, {"pos": 2}, {"seed": 1}, rollbacks=1)  # space again: saves
    fresh.close()
    assert ck.CheckpointManager(str(tmp_path)).rollbacks(2) == 1


def test_any_other_failed_save_names_its_cause(tmp_path, monkeypatch):
    from orbax.checkpoint import handlers

    async def denied(self, x, directory):
        raise PermissionError(errno.EACCES, "Permission denied", str(directory / "metadata"))

    monkeypatch.setattr(handlers.JsonCheckpointHandler, "_save_fn", denied)
    manager = ck.CheckpointManager(str(tmp_path))
    manager.save(1, {"params": _params(1.0)}, {"pos": 1}, {"seed": 1}, force=True)
    with pytest.raises(ck.CheckpointSaveError, match=r"step 1 under .*: PermissionError: .*Permission denied.*; "
                                                     r"there is no earlier checkpoint$") as info:
        manager.wait()
    assert info.value.errno is None and isinstance(info.value.__cause__, PermissionError)


def test_an_unfinished_step_folder_is_never_chosen(tmp_path):
    manager = ck.CheckpointManager(str(tmp_path))
    manager.save(1, {"params": _params(1.0)}, {"pos": 1}, {"seed": 1}, force=True)
    manager.close()
    # A copy of a whole step under the name Orbax writes into before its final rename.
    shutil.copytree(tmp_path / "checkpoints" / "1", tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp")
    assert ck.CheckpointManager(str(tmp_path)).latest_step() == 1
    assert ck.resolve_step_dir(str(tmp_path)).endswith(os.path.join("checkpoints", "1"))


def test_disk_full_is_recognised_in_every_form_the_writers_raise():
    # TensorStore's message (the array writer), as a real full tmpfs gave it.
    ts = ValueError('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "/x/": Failed to '
                    "write 954681 bytes to file 4: No space left on device [os_error_code='28']")
    assert ck.disk_full(ts) == errno.ENOSPC
    assert ck.disk_full(OSError(errno.EDQUOT, "Disk quota exceeded")) == errno.EDQUOT
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("commit failed") from e
    except RuntimeError as chained:
        assert ck.disk_full(chained) == errno.ENOSPC
    assert ck.disk_full(ValueError("shapes (3,) and (4,) differ")) is None
    assert ck.disk_full(OSError(errno.EACCES, "Permission denied")) is None


def test_a_full_disk_reaches_the_command_line_as_one_line(capsys):
    from ssl_jax.training.config_check import user_errors

    def main():
        error = ck.CheckpointSaveError("could not write the checkpoint of step 2 under /w: no space left on device")
        error.errno = errno.ENOSPC
        raise error

    with pytest.raises(SystemExit) as info:
        user_errors(main)()
    assert info.value.code == 1
    assert capsys.readouterr().err == "error: could not write the checkpoint of step 2 under /w: no space left on device\n"

    def other():
        raise ck.CheckpointSaveError("could not write the checkpoint of step 2 under /w: TypeError: bad leaf")

    with pytest.raises(ck.CheckpointSaveError):  # any other save failure keeps its traceback
        user_errors(other)()
