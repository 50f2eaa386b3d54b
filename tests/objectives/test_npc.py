"""Tests for ssl_jax/objectives/npc.py: a frame's prediction never reads its masked neighbourhood,
the loss ignores padding, and the objective overfits a batch without collapse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tones
from tests.objectives import ema_helpers


def npc_config(**objective):
    c = load_config_file(f"{ROOT}/configs/npc_tiny.py")
    c.train.abx_probe.speakers = 0
    c.model.update(hidden_size=32, num_layers=2, npc_kernel=9, npc_mask=3, logmel_bins=16)
    c.objective.update(**{"vq_groups": 2, "vq_codes": 8, **objective})
    return c


def batch_of(x, lengths):
    return {"audio": jnp.asarray(x), "audio_mask": jnp.asarray(np.arange(x.shape[1])[None] < np.asarray(lengths)[:, None])}


@pytest.fixture(scope="module")
def setup():
    obj = objectives.build(npc_config())
    batch = batch_of(tones(2, 8000, seed=1), [8000, 6000])
    params, _ = ema_helpers.start(obj, batch)
    return obj, batch, params


def _frames(obj, params, batch):
    return obj.encoder.apply({"params": params["encoder"]}, batch["audio"], batch["audio_mask"], method="features")[:2]


def test_prediction_never_reads_its_masked_neighbourhood(setup):
    obj, batch, params = setup
    x, mask = _frames(obj, params, batch)
    half = obj.encoder_config.npc_mask // 2
    # Training mode: dropout and Gumbel noise drawn alike for every input.
    predict = jax.jit(lambda xx: (lambda p, _, out: (p, out.last_hidden_state))(
        *obj.predict(params, xx, mask, jax.random.key(3), train=True)))
    base, base_h = predict(x)
    for t in (0, 17, 30):
        lo, hi = max(t - half, 0), t + half + 1
        noise = 5.0 * jax.random.normal(jax.random.key(t), x[:, lo:hi].shape)
        moved, _ = predict(x.at[:, lo:hi].add(noise))
        np.testing.assert_allclose(np.asarray(moved[:, t]), np.asarray(base[:, t]), atol=1e-5)
        assert float(jnp.abs(moved - base).max()) > 1e-3  # other frames do read them
    # The masked feature (before the hard codes, which could hide a small change) reads the
    # frames just outside the mask.
    t = 20
    for s in (t - half - 1, t + half + 1):
        _, h = predict(x.at[:, s].add(3.0))
        assert float(jnp.abs(h[:, t] - base_h[:, t]).max()) > 1e-4


def test_loss_is_padding_free(setup):
    obj, _, params = setup
    wav = tones(1, 8000, seed=5)
    loss = jax.jit(lambda b: obj.loss(params, b, jax.random.key(0), 0, False))
    alone, m_alone = loss(batch_of(wav[:, :6000], [6000]))
    noisy = wav.copy()
    noisy[:, 6000:] = np.random.default_rng(0).standard_normal(2000)
    padded, m_padded = loss(batch_of(noisy, [6000]))
    np.testing.assert_allclose(padded, alone, rtol=1e-5)
    assert float(m_padded["masked_frames"]) == float(m_alone["masked_frames"]) == float(
        obj.encoder_config.frame_lengths(np.array(6000)))
    for k in ("pred_std", "perplexity"):
        np.testing.assert_allclose(m_padded[k], m_alone[k], rtol=1e-5)


@pytest.mark.parametrize("vq_groups, ratio", [(0, 0.5), (2, 0.8)])
def test_overfits_a_batch_without_collapse(vq_groups, ratio):
    # With VQ, 2 groups of 8 codes leave 64 distinct predictions: the fit stops higher.
    obj = objectives.build(npc_config(vq_groups=vq_groups))
    batch = batch_of(tones(2, 8000, seed=1), [8000, 6000])
    _, _, history = ema_helpers.train(obj, batch, 25, lr=1e-2)
    first, last = float(history[0]["loss"]), float(history[-1]["loss"])
    assert last < ratio * first, (first, last)
    assert set(obj.floors) == ({"pred_std", "perplexity"} if vq_groups else {"pred_std"})
    for k, floor in obj.floors.items():
        assert float(history[-1][k]) > floor, (k, history[-1][k])


def test_bad_configs_are_clear_errors():
    c = npc_config()
    c.model.body = "conv"
    with pytest.raises(ValueError, match="body='npc'"):
        objectives.build(c)
    with pytest.raises(ValueError, match="vq_groups"):
        objectives.build(npc_config(vq_groups=3))
