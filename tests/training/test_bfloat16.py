"""`model.dtype=bfloat16`: bf16 compute on float32 master weights tracks float32 training."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import objectives
from ssl_jax.training import state as state_lib
from ssl_jax.training.config_check import load_config_file
from ssl_jax.training.loop import make_train_step
from ssl_jax.training.optimizer import make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 20
# Tolerance on each step's loss, relative to float32's: bf16 keeps 8 bits of mantissa (0.4%
# per rounding), and 20 updates let the two trajectories drift apart (measured: 0.22% at most).
RTOL = 0.01


def _losses(dtype: str) -> tuple[list[float], str]:
    c = load_config_file(os.path.join(ROOT, "configs", "w2v2_tiny.py"))
    c.model.dtype = dtype
    c.train.steps = STEPS
    objective = objectives.build(c)
    rng = np.random.default_rng(0)
    batch = {
        "audio": (0.1 * rng.standard_normal((2, 16000))).astype(np.float32),
        "audio_mask": np.ones((2, 16000), bool),
    }
    params = nn.unbox(objective.init(jax.random.key(0), batch))
    tx, schedule = make_optimizer(c.optim, STEPS)
    state = state_lib.TrainState.create(params, tx, {})
    step = jax.jit(make_train_step(objective, tx, schedule, 1)).lower(state, batch, jax.random.key(1)).compile()
    hlo = step.as_text()
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state.params))  # master weights
    return losses, hlo


def test_bfloat16_training_tracks_float32():
    f32, hlo32 = _losses("float32")
    bf16, hlo16 = _losses("bfloat16")
    assert "bf16" in hlo16 and "bf16" not in hlo32
    assert f32[-1] < f32[0]  # it trains
    np.testing.assert_allclose(bf16, f32, rtol=RTOL)
