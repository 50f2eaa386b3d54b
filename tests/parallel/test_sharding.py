"""Tests for ssl_jax/parallel: mesh sizes, rules, and 8 fake devices matching one device."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ssl_jax import objectives
from ssl_jax.models import LOGICAL_AXES
from ssl_jax.parallel import mesh as mesh_lib
from ssl_jax.parallel import sharding as sharding_lib
from tests.helpers import tiny_config, tones


def test_mesh_shape_resolution():
    assert mesh_lib.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
    assert mesh_lib.mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one"):
        mesh_lib.mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)
    with pytest.raises(ValueError, match="needs 6 devices"):
        mesh_lib.mesh_shape({"data": 3, "fsdp": 2, "tensor": 1}, 8)
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": -1, "tensor": 1})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}


def test_every_model_axis_has_a_rule():
    table = sharding_lib.rules_dict()
    assert set(LOGICAL_AXES) <= set(table), set(LOGICAL_AXES) - set(table)


def test_spec_for_divisibility_and_reuse():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert sharding_lib.spec_for((64, 128), ("embed", "mlp"), mesh) == P("fsdp", "tensor")
    assert sharding_lib.spec_for((63, 128), ("embed", "mlp"), mesh) == P(None, "tensor")  # 63 not divisible
    assert sharding_lib.spec_for((8, 16), ("batch", None), mesh) == P(("data", "fsdp"), None)
    assert sharding_lib.spec_for((16, 16), ("mlp", "heads"), mesh) == P("tensor", None)  # an axis is used once
    with pytest.raises(KeyError, match="no sharding rule"):
        sharding_lib.spec_for((4,), ("nonsense",), mesh)


def test_eight_devices_data_fsdp_match_one_device():
    assert jax.device_count() == 8, "tests/conftest.py provides 8 fake CPU devices"
    cfg = tiny_config()
    obj = objectives.build(cfg)
    audio = tones(8, 8000, seed=3)
    audio_mask = np.arange(8000)[None] < np.array([8000, 6400, 8000, 5000, 8000, 7000, 8000, 4000])[:, None]
    batch = {"audio": np.where(audio_mask, audio, 0.0).astype(np.float32), "audio_mask": audio_mask}
    boxed = jax.eval_shape(obj.init, jax.random.key(0), batch)
    params = jax.jit(lambda k: nn.unbox(obj.init(k, batch)))(jax.random.key(0))

    def loss_grad(p, b):
        return jax.value_and_grad(obj.loss, has_aux=True)(p, b, jax.random.key(1), 3, True)

    (ref_loss, ref_m), ref_g = jax.jit(loss_grad)(params, batch)

    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    p_sh = sharding_lib.tree_shardings(boxed, mesh)
    assert any(s.spec != P(*([None] * len(s.spec))) for s in jax.tree.leaves(p_sh)), "nothing was sharded by fsdp"
    b_sh = sharding_lib.batch_shardings(batch, mesh)
    sharded_params = jax.device_put(params, p_sh)
    sharded_batch = sharding_lib.shard_batch(batch, mesh)
    assert len(sharded_batch["audio"].sharding.device_set) == 8
    (loss, m), g = jax.jit(loss_grad, in_shardings=(p_sh, b_sh), out_shardings=((None, None), p_sh))(sharded_params, sharded_batch)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(m["accuracy"], ref_m["accuracy"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6), g, ref_g)
