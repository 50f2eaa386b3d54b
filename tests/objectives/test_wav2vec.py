"""Tests for ssl_jax/objectives/wav2vec.py: the binary loss against numpy, the wiring of the
objective, vq-wav2vec's straight-through gradient, codes and temperature, overfitting one batch."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict

from ssl_jax import objectives
from ssl_jax.models.frame_encoder import Config
from ssl_jax.objectives import future
from ssl_jax.objectives.wav2vec import linear_anneal
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tones
from tests.objectives.ema_helpers import train
from tests.objectives.future_helpers import encoder_fn, init_params, numpy_negatives, numpy_scores

STEPS, NEGATIVES = 4, 6


def w2v_config(recipe="wav2vec_tiny.py", **model):
    c = load_config_file(os.path.join(ROOT, "configs", recipe))
    c.train.abx_probe.speakers = 0
    fields = dict(c.model.to_dict(), logmel_bins=16, hidden_size=32, num_layers=2)
    if "vq_layer" in fields and fields["vq_layer"] >= 0:
        fields.update(vq_groups=2, vq_codes=8)
    fields.update(model)
    c.model = config_dict.ConfigDict(Config(**fields).to_dict())
    c.objective.prediction_steps = STEPS
    c.objective.num_negatives = NEGATIVES
    return c


def numpy_binary(pairs):
    def log_sigmoid(x):
        return -np.logaddexp(0.0, -x)

    losses = [-log_sigmoid(pos) - log_sigmoid(-negs).sum() for pos, negs in pairs]
    return np.mean(losses), np.mean([pos > negs.max() for pos, negs in pairs]), len(pairs)


def padded_batch(samples=8000, lengths=(8000, 5600), seed=1):
    audio_mask = np.arange(samples)[None] < np.asarray(lengths)[:, None]
    return {"audio": jnp.asarray(tones(len(lengths), samples, seed=seed)), "audio_mask": jnp.asarray(audio_mask)}


def test_registry_knows_both():
    assert objectives.get("wav2vec").__name__ == "Wav2VecObjective"
    assert objectives.get("vq_wav2vec").__name__ == "VqWav2VecObjective"


def test_binary_loss_matches_numpy():
    rng = np.random.default_rng(0)
    b, t, k, d, n = 2, 8, 3, 4, 5
    lengths = [8, 5]
    pred = rng.standard_normal((b, t, k, d)).astype(np.float32)
    z = rng.standard_normal((b, t, d)).astype(np.float32)
    neg = numpy_negatives(rng, lengths, t, n)
    mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
    scores = future.step_scores(jnp.asarray(pred), jnp.asarray(z), jnp.asarray(neg))
    loss, acc, pairs = future.binary_contrastive(scores, future.pair_mask(jnp.asarray(mask), k))
    want_loss, want_acc, want_pairs = numpy_binary(numpy_scores(pred, z, neg, lengths, k))
    assert int(pairs) == want_pairs
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(acc), want_acc, rtol=1e-6)


def test_wav2vec_loss_is_the_binary_loss_of_the_encoder_outputs():
    obj = objectives.build(w2v_config())
    batch = padded_batch()
    params = init_params(obj, batch)
    out = encoder_fn(obj)(params, batch)
    frames = np.asarray(out.frame_mask).sum(-1)
    neg = np.asarray(future.sample_negatives(jax.random.key(2), out.frame_mask, NEGATIVES))
    loss, m = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(5), 0, False))(params, dict(batch, negative_indices=neg))
    dense = params["predictor"]["steps"]
    c = np.asarray(out.last_hidden_state)
    pred = (c @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])).reshape(*c.shape[:2], STEPS, -1)
    want = numpy_binary(numpy_scores(pred, np.asarray(out.hidden_states[0]), neg, frames, STEPS))
    np.testing.assert_allclose(float(loss), want[0], rtol=1e-4)
    np.testing.assert_allclose(float(m["accuracy"]), want[1], rtol=1e-6)
    assert float(m["masked_frames"]) == want[2]


def test_config_errors():
    with pytest.raises(ValueError, match="vq_wav2vec"):
        objectives.build(w2v_config(vq_layer=0))
    with pytest.raises(ValueError, match="vq_layer must be 0"):
        objectives.build(w2v_config("vq_wav2vec_tiny.py", vq_layer=1))
    with pytest.raises(ValueError, match="causal"):
        objectives.build(w2v_config(causal=False))


def test_temperature_falls_linearly_then_stays():
    schedule = (2.0, 0.5, 0.7)
    got = [float(linear_anneal(schedule, 1000, s)) for s in (0, 350, 700, 1000)]
    np.testing.assert_allclose(got, [2.0, 1.25, 0.5, 0.5], rtol=1e-6)
    obj = objectives.build(w2v_config("vq_wav2vec_tiny.py"))
    assert obj.total_steps == 800
    np.testing.assert_allclose(float(obj.vq_temperature(280)), 1.25, rtol=1e-6)


@pytest.fixture(scope="module")
def vq():
    obj = objectives.build(w2v_config("vq_wav2vec_tiny.py"))
    batch = padded_batch()
    return obj, batch, init_params(obj, batch)


def test_straight_through_gradient_reaches_the_encoder(vq):
    obj, batch, params = vq

    @jax.jit
    def grads(p, key):
        return jax.grad(lambda q: obj.loss(q, batch, key, 0, True)[0])(p), jax.grad(
            lambda q: obj.loss(q, batch, key, 0, False)[0])(p)

    train_g, eval_g = grads(params, jax.random.key(3))
    for g, want in ((train_g, True), (eval_g, False)):
        proj = np.abs(np.asarray(g["encoder"]["projection"]["kernel"])).max()
        logits = np.abs(np.asarray(g["encoder"]["quantizer"]["weight_proj"]["kernel"])).max()
        # Train mode: straight-through soft codes carry the gradient past the quantiser; with hard
        # argmax codes (eval) nothing does, so only the codebook and the layers after it learn.
        assert (proj > 0 and logits > 0) if want else (proj == 0 and logits == 0), (want, proj, logits)
    assert np.abs(np.asarray(train_g["encoder"]["quantizer"]["codevectors"])).max() > 0


def test_codes_shapes_and_match_the_quantised_frames(vq):
    obj, batch, params = vq
    codes = np.asarray(jax.jit(obj.codes)(params, batch["audio"], batch["audio_mask"]))
    out = encoder_fn(obj)(params, batch)
    mask = np.asarray(out.frame_mask)
    assert codes.shape == (*mask.shape, 2) and codes.dtype == np.int32
    assert (codes[~mask] == -1).all()
    assert codes[mask].min() >= 0 and codes[mask].max() < 8
    # Looking the codes up in the codebooks gives the quantised frames the context network reads.
    book = np.asarray(params["encoder"]["quantizer"]["codevectors"]).reshape(2, 8, -1)
    lookup = np.concatenate([book[g][codes[..., g].clip(0)] for g in range(2)], axis=-1)
    np.testing.assert_allclose(lookup[mask], np.asarray(out.hidden_states[0])[mask], rtol=1e-6, atol=1e-6)
    assert len(np.unique(codes[mask][:, 0])) > 1


def test_wav2vec_overfits_a_batch():
    obj = objectives.build(w2v_config())
    batch = {"audio": jnp.asarray(tones(2, 8000, seed=0)), "audio_mask": jnp.ones((2, 8000), bool)}
    _, _, history = train(obj, batch, 40, lr=3e-3)
    first, last = float(history[0]["loss"]), float(history[-1]["loss"])
    np.testing.assert_allclose(first, (1 + NEGATIVES) * np.log(2), rtol=1e-5)  # zero-initialised predictors
    assert np.isfinite(last) and last < 0.5 * first, (first, last)
    assert float(history[-1]["accuracy"]) > 3 * obj.floors["accuracy"]


def test_vq_wav2vec_overfits_a_batch():
    # The codebook starts uniform in [0, 1): codevectors share a large positive mean and differ
    # little, so a common offset reaches the loss of scoring every candidate at the base rate
    # 1 / (1 + N) within a few updates, and discrimination comes after; falling clearly under
    # that loss, and the accuracy over the floor, is what shows learning here.
    c = w2v_config("vq_wav2vec_tiny.py", vq_codes=16)
    c.train.steps = 60  # the temperature anneals within the run
    obj = objectives.build(c)
    batch = {"audio": jnp.asarray(tones(2, 8000, seed=0)), "audio_mask": jnp.ones((2, 8000), bool)}
    _, _, history = train(obj, batch, 60, lr=1e-2)
    n = NEGATIVES
    base_rate = np.log(1 + n) + n * np.log((1 + n) / n)
    np.testing.assert_allclose(float(history[0]["loss"]), (1 + n) * np.log(2), rtol=1e-5)
    last = np.mean([float(h["loss"]) for h in history[-5:]])
    assert last < 0.95 * base_rate, (last, base_rate)
    assert np.mean([float(h["accuracy"]) for h in history[-5:]]) > obj.floors["accuracy"]
    assert float(history[-1]["vq_perplexity"]) > obj.floors["vq_perplexity"]
