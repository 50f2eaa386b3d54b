"""Tests for ssl_jax/objectives/cpc.py and the shared machinery of ssl_jax/objectives/future.py:
InfoNCE against numpy, distractor sampling, causality of the context, overfitting one batch."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict

from ssl_jax import objectives
from ssl_jax.models.frame_encoder import Config
from ssl_jax.objectives import future
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tones
from tests.objectives.ema_helpers import train
from tests.objectives.future_helpers import encoder_fn, init_params, numpy_negatives, numpy_scores


def cpc_config(**model):
    c = load_config_file(os.path.join(ROOT, "configs", "cpc_tiny.py"))
    c.train.abx_probe.speakers = 0
    fields = dict(c.model.to_dict(), logmel_bins=16, hidden_size=32, num_layers=1)
    fields.update(model)
    c.model = config_dict.ConfigDict(Config(**fields).to_dict())
    c.objective.prediction_steps = 4
    c.objective.num_negatives = 8
    return c


def numpy_infonce(pairs):
    losses, hits = [], []
    for pos, negs in pairs:
        logits = np.concatenate([[pos], negs])
        m = logits.max()
        losses.append(m + np.log(np.exp(logits - m).sum()) - pos)
        hits.append(pos > negs.max())
    return np.mean(losses), np.mean(hits), len(pairs)


def test_registry_knows_cpc():
    assert objectives.get("cpc").__name__ == "CpcObjective"


def test_step_scores_and_infonce_match_numpy():
    rng = np.random.default_rng(0)
    b, t, k, d, n = 2, 9, 3, 5, 4
    lengths = [9, 6]
    pred = rng.standard_normal((b, t, k, d)).astype(np.float32)
    z = rng.standard_normal((b, t, d)).astype(np.float32)
    neg = numpy_negatives(rng, lengths, t, n)
    mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
    scores = future.step_scores(jnp.asarray(pred), jnp.asarray(z), jnp.asarray(neg))
    assert scores.shape == (b, t, k, 1 + n)
    loss, acc, pairs = future.infonce(scores, future.pair_mask(jnp.asarray(mask), k))
    want_loss, want_acc, want_pairs = numpy_infonce(numpy_scores(pred, z, neg, lengths, k))
    assert int(pairs) == want_pairs == sum(max(length - s, 0) for length in lengths for s in range(1, k + 1))
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(acc), want_acc, rtol=1e-6)


def test_step_scores_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="pred"):
        future.step_scores(jnp.zeros((2, 5, 3, 4)), jnp.zeros((2, 5, 6)), jnp.zeros((2, 5, 2), jnp.int32))


def test_negatives_come_from_the_same_utterance_and_are_never_the_positive():
    lengths = np.array([40, 13, 2])
    mask = jnp.asarray(np.arange(40)[None] < lengths[:, None])
    idx = np.asarray(future.sample_negatives(jax.random.key(0), mask, 64))
    assert idx.shape == (3, 40, 64) and idx.dtype == np.int32
    for b, length in enumerate(lengths):
        for s in range(length):
            drawn = idx[b, s]
            assert drawn.min() >= 0 and drawn.max() < length, (b, s)
            assert not (drawn == s).any(), (b, s)
    # Uniform over the other valid frames: with 64 draws from 12 frames, each appears.
    assert set(idx[1, 5].tolist()) == set(range(13)) - {5}
    assert (idx[2, 0] == 1).all() and (idx[2, 1] == 0).all()


def test_cpc_context_is_causal_through_the_objective():
    # The paper's waveform encoder: frame t reads samples [160 t, 160 t + 465).
    cfg = cpc_config(frontend="conv", conv_dim=(16,) * 5, conv_kernel=(10, 8, 4, 4, 4), conv_stride=(5, 4, 2, 2, 2))
    obj = objectives.build(cfg)
    audio = tones(2, 6400, seed=3)
    batch = {"audio": jnp.asarray(audio), "audio_mask": jnp.ones((2, 6400), bool)}
    params = init_params(obj, batch)
    changed = audio.copy()
    cut = 4000
    changed[:, cut:] = tones(2, 6400 - cut, seed=4)
    encode = encoder_fn(obj)
    out_a = encode(params, batch)
    out_b = encode(params, dict(batch, audio=jnp.asarray(changed)))
    past = (cut - 465) // 160 + 1  # frames whose samples all precede the cut
    for a, b in ((out_a.last_hidden_state, out_b.last_hidden_state), (out_a.hidden_states[0], out_b.hidden_states[0])):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a[:, :past], b[:, :past], rtol=1e-6, atol=1e-6)
        assert np.abs(a[:, past + 1 :] - b[:, past + 1 :]).max() > 1e-3  # the future did change


def test_non_causal_bodies_are_rejected():
    with pytest.raises(ValueError, match="causal"):
        objectives.build(cpc_config(bidirectional=True))
    with pytest.raises(ValueError, match="causal"):
        objectives.build(cpc_config(body="conv", causal=False))


def test_cpc_loss_is_infonce_of_the_encoder_outputs():
    cfg = cpc_config()
    obj = objectives.build(cfg)
    lengths = [8000, 5600]
    audio_mask = np.arange(8000)[None] < np.asarray(lengths)[:, None]
    batch = {"audio": jnp.asarray(tones(2, 8000, seed=1)), "audio_mask": jnp.asarray(audio_mask)}
    params = init_params(obj, batch)
    out = encoder_fn(obj)(params, batch)
    frames = np.asarray(out.frame_mask).sum(-1)
    neg = np.asarray(future.sample_negatives(jax.random.key(2), out.frame_mask, 8))
    loss, m = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(5), 0, False))(params, dict(batch, negative_indices=neg))
    w = np.asarray(params["predictor"]["steps"]["kernel"])  # no bias: CPC's z^T W_k c
    c = np.asarray(out.last_hidden_state)
    pred = (c @ w).reshape(*c.shape[:2], 4, -1)
    want_loss, want_acc, want_pairs = numpy_infonce(numpy_scores(pred, np.asarray(out.hidden_states[0]), neg, frames, 4))
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-4)
    np.testing.assert_allclose(float(m["accuracy"]), want_acc, rtol=1e-6)
    assert float(m["masked_frames"]) == want_pairs
    assert "bias" not in params["predictor"]["steps"]


def test_cpc_overfits_a_batch():
    obj = objectives.build(cpc_config())
    batch = {"audio": jnp.asarray(tones(2, 8000, seed=0)), "audio_mask": jnp.ones((2, 8000), bool)}
    _, _, history = train(obj, batch, 40, lr=3e-3)
    first, last = float(history[0]["loss"]), float(history[-1]["loss"])
    np.testing.assert_allclose(first, np.log(1 + 8), rtol=1e-5)  # zero-initialised predictors: chance
    assert np.isfinite(last) and last < 0.5 * first, (first, last)
    assert float(history[-1]["accuracy"]) > 3 * obj.floors["accuracy"]
