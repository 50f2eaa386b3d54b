"""Tests for ssl_jax/objectives/vqvae.py: the straight-through gradient, which term moves which
parameters, the codes are the nearest entries, padding is ignored, and a batch is overfitted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.objectives.vqvae import masked_mse
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tones
from tests.objectives import ema_helpers


def vqvae_config(**objective):
    c = load_config_file(f"{ROOT}/configs/vqvae_tiny.py")
    c.train.abx_probe.speakers = 0
    c.model.update(hidden_size=32, num_layers=2, logmel_bins=16)
    c.objective.update(**{"num_codes": 16, "code_dim": 8, **objective})
    c.objective.decoder.update(hidden_size=32, num_layers=1)
    return c


def batch_of(x, lengths):
    return {"audio": jnp.asarray(x), "audio_mask": jnp.asarray(np.arange(x.shape[1])[None] < np.asarray(lengths)[:, None])}


@pytest.fixture(scope="module")
def setup():
    """(objective, batch, params, front-end frames, frame mask)."""
    obj = objectives.build(vqvae_config())
    batch = batch_of(tones(2, 8000, seed=1), [8000, 6000])
    params, _ = ema_helpers.start(obj, batch)
    x, mask, _ = obj.encoder.apply({"params": params["encoder"]}, batch["audio"], batch["audio_mask"], method="features")
    return obj, batch, params, x, mask


def _max_abs(tree):
    return max(float(jnp.abs(v).max()) for v in jax.tree.leaves(tree))


def test_reconstruction_gradient_passes_straight_through(setup):
    obj, _, params, x, mask = setup
    z, _ = obj.encode(params, x, mask)
    q = obj.quantize(params, z, mask)[0]
    through = jax.grad(lambda zz: masked_mse(obj.decode(params, obj.quantize(params, zz, mask)[0], mask), x, mask))(z)
    at_q = jax.grad(lambda qq: masked_mse(obj.decode(params, qq, mask), x, mask))(q)
    assert _max_abs(at_q) > 0
    np.testing.assert_allclose(np.asarray(through), np.asarray(at_q), rtol=1e-5, atol=1e-9)


def test_each_term_moves_only_its_parameters(setup):
    obj, batch, params, _, _ = setup
    grads = jax.jit(lambda p: {k: jax.grad(lambda pp: obj.loss(pp, batch, jax.random.key(0), 0, False)[1][k])(p)
                               for k in ("reconstruction", "codebook", "commitment")})(params)
    codebook = lambda g: g["quantizer"]["vq"]["codebook"]
    encoder_side = lambda g: (g["encoder"], g["quantizer"]["projection"])
    # The codebook learns from the codebook loss alone.
    assert _max_abs(codebook(grads["codebook"])) > 0
    assert _max_abs(codebook(grads["reconstruction"])) == 0.0 and _max_abs(codebook(grads["commitment"])) == 0.0
    # The encoder (and its projection to z) from reconstruction and commitment, never the codebook loss.
    assert _max_abs(encoder_side(grads["reconstruction"])) > 0 and _max_abs(encoder_side(grads["commitment"])) > 0
    assert _max_abs(encoder_side(grads["codebook"])) == 0.0
    # The decoder from reconstruction alone.
    assert _max_abs(grads["reconstruction"]["decoder"]) > 0
    assert _max_abs(grads["codebook"]["decoder"]) == 0.0 and _max_abs(grads["commitment"]["decoder"]) == 0.0


def test_codes_are_the_nearest_entries(setup):
    obj, _, params, x, mask = setup
    z, _ = obj.encode(params, x, mask)
    q, codes, _, _, perplexity = obj.quantize(params, z, mask)
    cb = np.asarray(params["quantizer"]["vq"]["codebook"])
    zn, valid = np.asarray(z, np.float64), np.asarray(mask)
    nearest = ((zn[:, :, None, :] - cb[None, None]) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(np.asarray(codes), np.where(valid, nearest, -1))
    np.testing.assert_allclose(np.asarray(q)[valid], cb[nearest[valid]], rtol=1e-5, atol=1e-6)
    counts = np.bincount(nearest[valid], minlength=cb.shape[0]) / valid.sum()
    used = counts[counts > 0]
    np.testing.assert_allclose(float(perplexity), np.exp(-(used * np.log(used)).sum()), rtol=1e-5)


def test_loss_is_padding_free(setup):
    obj, _, params, _, _ = setup
    wav = tones(1, 8000, seed=5)
    loss = jax.jit(lambda b: obj.loss(params, b, jax.random.key(0), 0, False))
    alone, m_alone = loss(batch_of(wav[:, :6000], [6000]))
    noisy = wav.copy()
    noisy[:, 6000:] = np.random.default_rng(0).standard_normal(2000)
    padded, m_padded = loss(batch_of(noisy, [6000]))
    np.testing.assert_allclose(padded, alone, rtol=1e-5)
    assert float(m_padded["masked_frames"]) == float(m_alone["masked_frames"]) == float(
        obj.encoder_config.frame_lengths(np.array(6000)))
    for k in ("reconstruction", "codebook", "commitment", "perplexity"):
        np.testing.assert_allclose(m_padded[k], m_alone[k], rtol=1e-5)


def test_overfits_a_batch_without_collapse(setup):
    obj, batch, _, _, _ = setup
    _, _, history = ema_helpers.train(obj, batch, 30, lr=3e-3)
    first, last = history[0], history[-1]
    # The fit is the reconstruction; the codebook and commitment terms measure how far z lies
    # from its entry, a gap Adam closes by about lr per step and coordinate, so within 30 steps
    # they need not fall.
    assert float(last["reconstruction"]) < 0.5 * float(first["reconstruction"]), (first, last)
    assert float(last["loss"]) < float(first["loss"])
    assert float(last["perplexity"]) > obj.floors["perplexity"]


def test_bad_configs_are_clear_errors():
    c = vqvae_config()
    c.model.vq_layer = 1
    with pytest.raises(ValueError, match="vq_layer"):
        objectives.build(c)
    with pytest.raises(ValueError, match="num_codes"):
        objectives.build(vqvae_config(num_codes=1))
