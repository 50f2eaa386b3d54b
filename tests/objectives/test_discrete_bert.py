"""Tests for ssl_jax/objectives/discrete_bert.py and the units front end."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.training import loop
from ssl_jax.training.optimizer import make_optimizer
from ssl_jax.training.state import TrainState
from tests.helpers import fitted, hubert_config
from tests.helpers import tones


def discrete_bert_config(units=8):
    c = hubert_config(clusters=(units,))
    c.model.update(frontend="units", units=units, unit_dim=16)
    c.objective.name = "discrete_bert"
    return c


def test_units_are_the_nearest_centers_and_the_codebook_never_moves():
    cfg = discrete_bert_config()
    clean = tones(2, 16000, seed=2)
    batch = {"audio": jnp.asarray(clean), "audio_mask": jnp.ones((2, 16000), bool)}
    books = fitted(hubert_config(clusters=(8,)), batch).codebooks
    obj = objectives.build(cfg)
    obj.codebooks = books
    params = nn.unbox(obj.init(jax.random.key(0), batch))
    from ssl_jax.objectives import targets

    f = np.asarray(targets.mfcc_frames(batch["audio"], jnp.full((2,), 16000), obj.num_frames(16000)))
    z = (f - books.mean) / books.std
    expect = np.argmin(((z[..., None, :] - books.centers[0]) ** 2).sum(-1), -1)
    assert (np.asarray(obj.unit_ids(params, batch)) == expect).mean() > 0.99

    optim = {"lr": 5e-3, "warmup_fraction": 0.0, "schedule": "constant", "b1": 0.9, "b2": 0.98, "eps": 1e-6,
             "weight_decay": 0.1, "clip_norm": 0.0}
    tx, schedule = make_optimizer(optim, 100)
    state = TrainState.create(params, tx)
    step = jax.jit(loop.make_train_step(obj, tx, schedule, 1))
    first = None
    for _ in range(100):
        state, m = step(state, batch, jax.random.key(1))
        first = m if first is None else first
    front = state.params["encoder"]["frontend"]
    np.testing.assert_array_equal(np.asarray(front["centers"]), books.centers[0])
    np.testing.assert_array_equal(np.asarray(front["mean"]), books.mean)
    assert not np.allclose(np.asarray(front["embedding"]), np.asarray(params["encoder"]["frontend"]["embedding"]))
    assert float(m["loss"]) < 0.7 * float(first["loss"]) and float(m["accuracy"]) > 0.3  # chance: 1/8


def test_front_end_and_units_must_agree():
    cfg = discrete_bert_config()
    cfg.model.frontend = "logmel"
    with pytest.raises(ValueError, match="units"):
        objectives.build(cfg)
    cfg = discrete_bert_config(units=8)
    cfg.objective.targets.num_clusters = (16,)
    with pytest.raises(ValueError, match="num_clusters"):
        objectives.build(cfg)
