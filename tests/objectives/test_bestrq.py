"""Tests for ssl_jax/objectives/bestrq.py: the random-projection quantizer and overfitting."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax import objectives
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tones


def bestrq_config():
    c = load_config_file(f"{ROOT}/configs/bestrq_tiny.py")
    c.model.update(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_conv_pos_embedding_groups=4)
    c.objective.update(codebook_size=64, mask_length=4)
    return c


def test_codes_ignore_gain_and_padding_and_use_the_codebook():
    obj = objectives.build(bestrq_config())
    x = tones(2, 16000, seed=1)
    batch = {"audio": jnp.asarray(x), "audio_mask": jnp.ones((2, 16000), bool)}
    state = obj.init_state(jax.random.key(0), batch)
    ids = np.asarray(obj.target_ids(state, batch))
    assert ids.shape == (1, 2, obj.num_frames(16000)) and len(np.unique(ids)) > 8
    louder = np.asarray(obj.target_ids(state, dict(batch, audio=batch["audio"] * 3.0)))
    assert (louder == ids).mean() > 0.95  # per-utterance standardisation removes the gain
    padded = np.zeros((2, 19200), np.float32)
    padded[:, :16000] = x
    mask = np.arange(19200)[None] < 16000
    ids_pad = np.asarray(obj.target_ids(state, {"audio": jnp.asarray(padded), "audio_mask": jnp.asarray(np.repeat(mask, 2, 0))}))
    np.testing.assert_array_equal(ids_pad[:, :, : ids.shape[2]], ids)


def test_log_mel_front_end_is_required():
    c = bestrq_config()
    c.model.frontend = "conv"
    with pytest.raises(ValueError, match="logmel"):
        objectives.build(c)


def test_tiny_bestrq_overfits_one_batch():
    obj = objectives.build(bestrq_config())
    batch = {"audio": jnp.asarray(tones(2, 16000, seed=2)), "audio_mask": jnp.ones((2, 16000), bool)}
    params = nn.unbox(obj.init(jax.random.key(0), batch))
    state = obj.init_state(jax.random.key(1), batch)
    tx = optax.adam(5e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, i):
        (loss, m), g = jax.value_and_grad(obj.loss, has_aux=True)(params, batch, jax.random.key(1), i, True, state)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, m

    first = None
    for i in range(120):
        params, opt_state, loss, m = step(params, opt_state, i)
        first = (loss, m) if first is None else first
    assert float(loss) < 0.3 * float(first[0]), (first[0], loss)
    assert float(m["accuracy"]) > 0.75 and float(first[1]["accuracy"]) < 0.2
