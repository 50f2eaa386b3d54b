"""Tests for ssl_jax/objectives/apc.py: the L1 of frame t+n against numpy, a causal context
(future audio never reaches past predictions), padding-free loss, VQ-APC's straight-through
gradient, and both tiny objectives overfit a batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.models.frame_encoder import model_config
from ssl_jax.objectives.apc import future_l1
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tones
from tests.objectives import ema_helpers


def apc_config(recipe="apc_tiny", **model):
    c = load_config_file(f"{ROOT}/configs/{recipe}.py")
    vq = dict(vq_layer=2, vq_groups=1, vq_codes=8) if c.model.vq_layer >= 0 else {}
    c.model = model_config(**{**c.model.to_dict(), "logmel_bins": 16, "hidden_size": 24, "num_layers": 2, **vq, **model})
    return c


def batch_of(x, lengths):
    return {"audio": jnp.asarray(x), "audio_mask": jnp.asarray(np.arange(x.shape[1])[None] < np.asarray(lengths)[:, None])}


@pytest.fixture(scope="module")
def batch():
    return batch_of(tones(3, 6400, seed=2), [6400, 6400, 4800])


def test_future_l1_matches_numpy():
    rng = np.random.default_rng(0)
    pred, x = rng.normal(size=(2, 7, 3)), rng.normal(size=(2, 7, 3))
    mask = np.arange(7)[None] < np.array([[7], [5]])
    loss, pairs = future_l1(jnp.asarray(pred), jnp.asarray(x), jnp.asarray(mask), 2)
    errs = [np.abs(pred[b, t] - x[b, t + 2]) for b in range(2) for t in range(7) if t + 2 < (7, 5)[b]]
    assert int(pairs) == len(errs) == 8
    np.testing.assert_allclose(float(loss), np.mean(errs), rtol=1e-6)


def test_predictions_never_see_the_future_and_padding_is_ignored(batch):
    obj = objectives.build(apc_config())
    params, _ = ema_helpers.start(obj, batch)
    # Log-mel frame t reads samples [160 t, 160 t + 400) and CMVN is per utterance, so causality
    # is checked on the body's input; the audio changes only beyond the lengths.
    x, fm, _ = obj.encoder.apply({"params": params["encoder"]}, batch["audio"], batch["audio_mask"], method="features")
    a = obj.encoder.apply({"params": params["encoder"]}, x, fm, method="body").last_hidden_state
    b = obj.encoder.apply({"params": params["encoder"]}, x.at[:, 20:].add(1.0), fm, method="body").last_hidden_state
    np.testing.assert_array_equal(np.asarray(a[:, :20]), np.asarray(b[:, :20]))
    assert not np.allclose(np.asarray(a[:, 20:]), np.asarray(b[:, 20:]))
    loss = jax.jit(lambda b: obj.loss(params, b, jax.random.key(1), 0, False)[0])
    padded = dict(batch, audio=batch["audio"].at[2, 4800:].set(2.0))
    assert float(loss(batch)) == pytest.approx(float(loss(padded)), rel=1e-6)


def test_a_bidirectional_body_is_refused():
    with pytest.raises(ValueError, match="causal"):
        objectives.build(apc_config(bidirectional=True))


def test_vq_apc_gradient_passes_the_quantizer(batch):
    obj = objectives.build(apc_config("vq_apc_tiny"))
    params, _ = ema_helpers.start(obj, batch)
    grads = jax.jit(jax.grad(lambda p: obj.loss(p, batch, jax.random.key(3), 0, True)[0]))(params)
    below = grads["encoder"]["layers_0"]["forward"]["input_kernel"]  # under the VQ layer (after layer 2)
    assert float(jnp.abs(below).max()) > 0.0


@pytest.mark.parametrize("recipe", ["apc_tiny", "vq_apc_tiny"])
def test_tiny_objective_overfits_a_batch(recipe, batch):
    obj = objectives.build(apc_config(recipe))
    _, _, hist = ema_helpers.train(obj, batch, steps=40, lr=1e-2)
    # VQ-APC passes everything through one codebook of 8 entries here, so it fits less.
    ratio = 0.8 if recipe == "vq_apc_tiny" else 0.6
    assert float(hist[-1]["loss"]) < ratio * float(hist[0]["loss"]), (hist[0]["loss"], hist[-1]["loss"])
    if recipe == "vq_apc_tiny":
        assert float(hist[-1]["perplexity"]) > 1.0
