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
    # With b1=0 and a large eps Adam is no longer scale-invariant: a coordinate moves by
    # lr * g / (|g| + eps), so the update shows the gradient after clipping. 12 equal
    # coordinates clipped to global norm 1 are 1/sqrt(12) each.
    eps = 1.0
    tx, _ = make_optimizer(dict(OPTIM, warmup_fraction=0.0, b1=0.0, eps=eps), 10)
    params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
    huge = {"w": jnp.full((3, 3), 1e6), "b": jnp.full(3, 1e6)}
    updates, _ = tx.update(huge, tx.init(params), params)
    g = 1.0 / np.sqrt(12.0)
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3 * g / (g + eps), rtol=1e-4)
    # Without clipping the same gradient moves each coordinate by about lr.
    tx, _ = make_optimizer(dict(OPTIM, warmup_fraction=0.0, b1=0.0, eps=eps, clip_norm=0.0), 10)
    updates, _ = tx.update(huge, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3, rtol=1e-4)


def test_weight_decay_skips_vectors():
    tx, _ = make_optimizer(dict(OPTIM, warmup_fraction=0.0, weight_decay=0.5), 10)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    zero = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["b"]).max()) == 0.0
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-3 * 0.5, rtol=1e-5)
    assert optax.tree.norm(updates) > 0
