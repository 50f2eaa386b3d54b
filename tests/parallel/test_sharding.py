"""Tests for ssl_jax/parallel: mesh sizes, rules, and 8 fake devices matching one device."""

import math

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
from ssl_jax.training import loop
from ssl_jax.training.optimizer import make_optimizer
from ssl_jax.training.state import TrainState
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


@pytest.mark.parametrize("shape", [(2, 4, 1), (2, 2, 2)], ids=["data2xfsdp4", "data2xfsdp2xtensor2"])
def test_eight_devices_match_one_device(shape):
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

    mesh = mesh_lib.make_mesh(dict(zip(mesh_lib.AXES, shape)))
    p_sh = sharding_lib.tree_shardings(boxed, mesh)
    for axis in ("fsdp", "tensor")[: 1 + (shape[2] > 1)]:
        assert any(axis in jax.tree.leaves(tuple(s.spec)) for s in jax.tree.leaves(p_sh)), f"nothing was sharded over {axis}"
    b_sh = sharding_lib.batch_shardings(batch, mesh)
    sharded_params = jax.device_put(params, p_sh)
    sharded_batch = sharding_lib.shard_batch(batch, mesh)
    assert len(sharded_batch["audio"].sharding.device_set) == 8
    sharded_step = jax.jit(sharding_lib.activations_on(loss_grad, mesh), in_shardings=(p_sh, b_sh),
                           out_shardings=((None, None), p_sh))
    (loss, m), g = sharded_step(sharded_params, sharded_batch)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(m["accuracy"], ref_m["accuracy"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6), g, ref_g)


def _state_and_step(cfg, mesh, batch):
    """The abstract sharded TrainState and the jitted train step of `cfg` on `mesh`."""
    obj = objectives.build(cfg)
    tx, schedule = make_optimizer(cfg.optim, 10)
    zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in batch.items()}
    boxed = jax.eval_shape(lambda k: TrainState.create(obj.init(k, zeros), tx), jax.random.key(0))
    shardings = sharding_lib.tree_shardings(boxed, mesh)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), nn.unbox(boxed), shardings)
    step = jax.jit(
        sharding_lib.activations_on(loop.make_train_step(obj, tx, schedule, 1), mesh),
        in_shardings=(shardings, sharding_lib.batch_shardings(batch, mesh), sharding_lib.replicated(mesh)),
        out_shardings=(shardings, sharding_lib.replicated(mesh)),
    )
    return obj, abstract, shardings, step


def _device_bytes(tree) -> int:
    """Bytes of `tree`'s arrays that one device holds, from their shardings."""
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_fsdp_and_tensor_parallel_shard_parameters_and_optimizer_state():
    cfg = tiny_config(hidden_size=64, intermediate_size=128, num_heads=4)
    batch = {"audio": jax.ShapeDtypeStruct((8, 4000), jnp.float32), "audio_mask": jax.ShapeDtypeStruct((8, 4000), jnp.bool_)}
    per_device, compiled_args, batch_ways = {}, {}, {}
    for name, shape in {"data": (8, 1, 1), "fsdp": (1, 8, 1), "fsdp+tensor": (1, 4, 2)}.items():
        batch_ways[name] = shape[0] * shape[1]
        mesh = mesh_lib.make_mesh(dict(zip(mesh_lib.AXES, shape)))
        _, abstract, _, step = _state_and_step(cfg, mesh, batch)
        per_device[name] = (_device_bytes(abstract.params), _device_bytes(abstract.opt_state))
        rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding_lib.replicated(mesh))
        sharded_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding_lib.batch_sharding(mesh, 2))
                         for k, v in batch.items()}
        compiled_args[name] = step.lower(abstract, sharded_batch, rng).compile().memory_analysis().argument_size_in_bytes
    total_params, total_opt = per_device["data"]  # data parallel: every device holds everything
    for name in ("fsdp", "fsdp+tensor"):
        params, opt = per_device[name]
        # 8-way sharded, but for the few small vectors (biases, norms) no axis divides.
        assert params <= total_params / 8 * 1.25, (name, params, total_params)
        assert opt <= total_opt / 8 * 1.25, (name, opt, total_opt)
    for name, (params, opt) in per_device.items():  # the compiler's view: what each device is handed
        batch_share = 8 * 4000 * 5 // batch_ways[name]  # float32 audio + bool mask over data x fsdp
        assert abs(compiled_args[name] - (params + opt + batch_share)) <= 64, (name, compiled_args[name], params + opt)


def test_activation_constraints_reach_the_compiled_step():
    cfg = tiny_config(hidden_size=64, intermediate_size=128, num_heads=4)
    batch = {"audio": jax.ShapeDtypeStruct((8, 4000), jnp.float32), "audio_mask": jax.ShapeDtypeStruct((8, 4000), jnp.bool_)}
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    obj = objectives.build(cfg)
    zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in batch.items()}
    params = jax.eval_shape(lambda k: nn.unbox(obj.init(k, zeros)), jax.random.key(0))
    forward = lambda p, b: obj.loss(p, b, jax.random.key(1), 3, True)[0]  # noqa: E731
    plain = jax.jit(forward).lower(params, batch).as_text()
    traced = jax.jit(sharding_lib.activations_on(forward, mesh)).lower(params, batch).as_text()
    constraint = "sdy.sharding_constraint"
    assert constraint not in plain
    lines = [line for line in traced.splitlines() if constraint in line]
    # Per layer: q, k, v, the MLP's hidden units, the residual stream.
    assert len(lines) >= 5 * cfg.model.num_layers, len(lines)
    assert any('{"data", "fsdp"}' in line for line in lines)  # batch over data x fsdp
    assert sum('{"tensor"}' in line for line in lines) >= 4 * cfg.model.num_layers  # heads, MLP units


def test_tensor_parallel_rejects_heads_it_would_split():
    mesh = mesh_lib.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
    sharding_lib.check_model({"num_heads": 8, "intermediate_size": 64}, mesh)
    with pytest.raises(ValueError, match="num_heads = 6 is not divisible by mesh.tensor = 4"):
        sharding_lib.check_model({"num_heads": 6, "intermediate_size": 64}, mesh)
    with pytest.raises(ValueError, match="intermediate_size = 30"):
        sharding_lib.check_model({"num_heads": 8, "intermediate_size": 30}, mesh)
    sharding_lib.check_model({"num_heads": 6}, mesh_lib.make_mesh({"data": 2, "fsdp": 4, "tensor": 1}))


def test_gradient_accumulation_keeps_every_micro_batch_on_every_device():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    x = jax.device_put(np.arange(32 * 3, dtype=np.float32).reshape(32, 3), sharding_lib.batch_sharding(mesh, 2))
    micro = jax.jit(sharding_lib.activations_on(lambda a: loop.split_micro(a, 2), mesh))(x)
    assert micro.shape == (2, 16, 3)
    # Each of the 8 devices holds 2 rows of each micro-batch, not whole micro-batches.
    assert {s.data.shape for s in micro.addressable_shards} == {(2, 2, 3)}
    np.testing.assert_array_equal(np.asarray(micro)[1, :3, 0], [3, 9, 15])  # rows 1, 3, 5
    np.testing.assert_array_equal(np.asarray(loop.join_micro(micro)), np.asarray(x))
