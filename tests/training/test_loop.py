"""Tests for ssl_jax/training/loop.py: a non-finite loss skips the update and is counted."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import objectives
from ssl_jax.training import loop
from ssl_jax.training.optimizer import make_optimizer
from ssl_jax.training.state import TrainState
from tests.objectives.test_wav2vec2 import tiny_config, tones


def test_non_finite_loss_skips_update_and_counts():
    cfg = tiny_config()
    obj = objectives.build(cfg)
    good = {"audio": jnp.asarray(tones(2, 3200)), "audio_mask": jnp.ones((2, 3200), bool)}
    bad = dict(good, audio=good["audio"].at[0, 100].set(jnp.nan))
    cfg.optim.warmup_fraction = 0.0
    tx, schedule = make_optimizer(cfg.optim, 10)
    state = TrainState.create(nn.unbox(obj.init(jax.random.key(0), good)), tx)
    step = jax.jit(loop.make_train_step(obj, tx, schedule, grad_accum=2))
    s1, m1 = step(state, bad, jax.random.key(1))
    assert int(s1.skipped) == 1 and int(s1.step) == 1 and not np.isfinite(float(m1["loss"]))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), s1.params, state.params)
    s2, m2 = step(s1, good, jax.random.key(1))
    assert int(s2.skipped) == 1 and np.isfinite(float(m2["loss"]))
    assert not np.array_equal(np.asarray(s2.params["project_q"]["kernel"]), np.asarray(state.params["project_q"]["kernel"]))
