"""Tests for ssl_jax/models/encoder.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.encoder import EncoderConfig, EncoderOutput, SpeechEncoder, frame_lengths

TINY = EncoderConfig(
    conv_dim=(8, 8, 8), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
    num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
)


def test_from_config_accepts_base_and_rejects_unknown():
    from configs.w2v2_base import model_config

    for variant in ("base", "large"):
        cfg = EncoderConfig.from_config(model_config(variant))
        assert cfg.conv_kernel == (10, 3, 3, 3, 3, 2, 2) and cfg.downsampling == 320
    assert EncoderConfig.from_config(model_config("base")) == EncoderConfig()
    with pytest.raises(ValueError, match="hiden_size"):
        EncoderConfig.from_config({"hiden_size": 3})
    with pytest.raises(ValueError):
        EncoderConfig(feat_extract_norm="batch")
    assert EncoderConfig.from_config(TINY.to_dict()) == TINY


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_forward_padding_and_mask_embedding(norm):
    cfg = dataclasses.replace(TINY, feat_extract_norm=norm, conv_bias=norm == "layer")
    enc = SpeechEncoder(cfg)
    rng = np.random.default_rng(0)
    wavs = rng.standard_normal((2, 3000)).astype(np.float32)
    lengths = np.array([3000, 1900])
    mask = np.arange(3000)[None] < lengths[:, None]
    params = enc.init(jax.random.key(0), wavs, mask)
    out = enc.apply(params, wavs, mask)
    assert isinstance(out, EncoderOutput)
    t = int(frame_lengths(cfg, np.array([3000]))[0])
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, t, 16)
    assert out.features.shape == (2, t, 8)
    np.testing.assert_array_equal(out.frame_mask.sum(1), frame_lengths(cfg, lengths))
    # Item 1 alone (unpadded, and with garbage in its padding) gives the same valid frames.
    n = int(frame_lengths(cfg, np.array([1900]))[0])
    alone = enc.apply(params, wavs[1:, :1900], mask[1:, :1900])
    noisy = wavs.copy()
    noisy[1, 1900:] = 5.0
    out_noisy = enc.apply(params, noisy, mask)
    for a, b, c in zip(out.hidden_states, alone.hidden_states, out_noisy.hidden_states):
        np.testing.assert_allclose(a[1, :n], b[0], atol=2e-5)
        np.testing.assert_allclose(a[1, :n], c[1, :n], atol=2e-5)
    # Feature penalty: mean square of the raw conv features over valid frames.
    assert float(out.feature_penalty) > 0
    # The mask embedding replaces the masked frames of the projected features.
    mti = np.zeros(out.frame_mask.shape, bool)
    mti[:, 2:5] = True
    masked = enc.apply(params, wavs, mask, mask_time_indices=mti)
    assert not np.allclose(masked.hidden_states[-1][0, :2], out.hidden_states[-1][0, :2])
    np.testing.assert_allclose(masked.features, out.features)


def test_feature_grad_scale():
    one_layer = dataclasses.replace(TINY, num_layers=1)
    enc = SpeechEncoder(dataclasses.replace(one_layer, feature_grad_scale=1.0))
    enc_s = SpeechEncoder(dataclasses.replace(one_layer, feature_grad_scale=0.1))
    wavs = jax.random.normal(jax.random.key(0), (1, 3200))
    mask = jnp.ones((1, 3200), bool)
    params = enc.init(jax.random.key(1), wavs, mask)

    def grads(m):
        return jax.jit(jax.grad(lambda p: m.apply(p, wavs, mask).last_hidden_state.sum()))(params)["params"]

    g1, g2 = grads(enc), grads(enc_s)
    k1 = g1["feature_extractor"]["conv_0"]["kernel"].unbox()
    k2 = g2["feature_extractor"]["conv_0"]["kernel"].unbox()
    np.testing.assert_allclose(k2, 0.1 * k1, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(
        g2["feature_projection"]["kernel"].unbox(), g1["feature_projection"]["kernel"].unbox(), rtol=1e-6
    )


def test_dropout_uses_dropout_stream():
    enc = SpeechEncoder(TINY)
    wavs = jax.random.normal(jax.random.key(0), (1, 3200))
    mask = jnp.ones((1, 3200), bool)
    params = enc.init(jax.random.key(1), wavs, mask)
    a = enc.apply(params, wavs, mask, deterministic=False, rngs={"dropout": jax.random.key(0)})
    b = enc.apply(params, wavs, mask, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a.last_hidden_state, b.last_hidden_state)
