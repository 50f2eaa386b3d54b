"""Tests for ssl_jax/models/feature_extractor.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.feature_extractor import FeatureExtractor, MaskedGroupNorm, conv_output_lengths

DIMS = (8,) * 7
KERNELS = (10, 3, 3, 3, 3, 2, 2)
STRIDES = (5, 2, 2, 2, 2, 2, 2)


def test_output_lengths_match_320x_downsampling():
    lengths = np.array([400, 16000, 16320, 31999])
    got = conv_output_lengths(lengths, KERNELS, STRIDES)
    # Standard extractor: receptive field 400 samples, hop 320.
    np.testing.assert_array_equal(got, (lengths - 400) // 320 + 1)
    assert conv_output_lengths(np.array([399]), KERNELS, STRIDES)[0] == 0
    assert isinstance(conv_output_lengths(jnp.array([16000]), KERNELS, STRIDES), jax.Array)


@pytest.mark.parametrize("norm,bias", [("group", False), ("layer", True)])
def test_shapes_and_padding_invariance(norm, bias):
    fe = FeatureExtractor(DIMS, KERNELS, STRIDES, conv_bias=bias, norm=norm)
    rng = np.random.default_rng(0)
    lengths = np.array([6400, 4000])
    wavs = rng.standard_normal((2, 6400)).astype(np.float32)
    wavs[1, 4000:] = 0.0
    params = fe.init(jax.random.key(0), wavs, lengths)
    feats, flen = fe.apply(params, wavs, lengths)
    assert feats.shape == (2, 19, 8)
    np.testing.assert_array_equal(flen, conv_output_lengths(lengths, KERNELS, STRIDES))
    alone, alone_len = fe.apply(params, wavs[1:, :4000], lengths[1:])
    assert int(alone_len[0]) == int(flen[1])
    np.testing.assert_allclose(feats[1, : flen[1]], alone[0], atol=1e-5)
    names = set(params["params"])
    assert names >= {f"conv_{i}" for i in range(7)}
    assert ("norm_0" in names) and (("norm_1" in names) == (norm == "layer"))
    assert ("bias" in params["params"]["conv_0"]) == bias


def test_masked_group_norm_uses_valid_frames_only():
    x = np.random.default_rng(1).standard_normal((1, 10, 3)).astype(np.float32)
    mask = np.arange(10)[None] < 6
    gn = MaskedGroupNorm(3)
    p = gn.init(jax.random.key(0), x, mask)
    y = np.asarray(gn.apply(p, x, mask))
    v = x[0, :6]
    ref = (v - v.mean(0)) / np.sqrt(v.var(0) + 1e-5)
    np.testing.assert_allclose(y[0, :6], ref, atol=1e-5)


def test_bad_norm_is_an_error():
    fe = FeatureExtractor(DIMS, KERNELS, STRIDES, norm="batch")
    with pytest.raises(ValueError, match="group"):
        fe.init(jax.random.key(0), jnp.zeros((1, 800)), jnp.array([800]))
