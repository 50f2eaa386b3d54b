"""Tests for ssl_jax/training/optimizer.py: the warm-up/decay schedule, clipping, decay mask."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax.training.optimizer import learning_rate_schedule, make_optimizer

OPTIM = {"lr": 1e-3, "warmup_fraction": 0.1, "schedule": "linear", "b1": 0.9, "b2": 0.98, "eps": 1e-6, "weight_decay": 0.0, "clip_norm": 1.0}


def test_linear_warmup_then_linear_decay():
    s = learning_rate_schedule(OPTIM, 100)
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 5e-4, rtol=1e-6)
    np.testing.assert_allclose(float(s(10)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(s(55)), 5e-4, rtol=1e-6)
    assert float(s(100)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="unknown optim.schedule"):
        learning_rate_schedule(dict(OPTIM, schedule="exp"), 100)


def test_clipping_bounds_the_first_update():
    tx, _ = make_optimizer(dict(OPTIM, warmup_fraction=0.0, b1=0.0), 10)
    params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
    huge = {"w": jnp.full((3, 3), 1e6), "b": jnp.full(3, 1e6)}
    state = tx.init(params)
    updates, _ = tx.update(huge, state, params)
    # Adam normalises the step: every coordinate moves by about lr, whatever the gradient scale.
    np.testing.assert_allclose(np.abs(np.asarray(updates["w"])), 1e-3, rtol=1e-3)


def test_weight_decay_skips_vectors():
    tx, _ = make_optimizer(dict(OPTIM, warmup_fraction=0.0, weight_decay=0.5), 10)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    zero = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["b"]).max()) == 0.0
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3 * 0.5, rtol=1e-5)
    assert optax.tree.norm(updates) > 0
