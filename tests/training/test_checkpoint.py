"""Tests for ssl_jax/training/checkpoint.py: round trips, keep-N, path resolution, sharded restore."""

import os

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
    restored, restored_data, config = manager.restore(abstract)
    manager.close()
    assert int(restored["step"]) == 4
    assert restored["params"]["encoder"]["w"].sharding == replicated
    np.testing.assert_array_equal(restored["params"]["quantizer"]["c"], np.arange(6.0) + 4)
    assert restored_data == {"epoch": 1, "blob": b"\x00\xffabc", "nested": [1, {"x": 3}]}
    assert config == {"seed": 4}
    params, _ = ck.load_pretrained(str(tmp_path))
    np.testing.assert_array_equal(params["encoder"]["b"], np.full(3, 4.0))
