"""Tests for ssl_jax/models/patch_encoder.py: config, patches, positions, padding, subsets, Upstream."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.encoder import EncoderOutput, config_from, encoder_module
from ssl_jax.models.frontends import LogMelFrontend
from ssl_jax.models.patch_encoder import Config, Encoder, frames_of, patchify, sincos_positions

TINY = Config(patch_freq=16, patch_time=4, dim=32, num_layers=2, num_heads=2, intermediate_size=64, logmel_mean=-10.0,
              logmel_std=4.0)


def noise(num, samples, seed=0):
    return (0.3 * np.random.default_rng(seed).standard_normal((num, samples))).astype(np.float32)


@pytest.fixture(scope="module")
def params():
    wav = noise(1, 4000)
    return jax.jit(lambda w: nn.unbox(Encoder(TINY).init(jax.random.key(0), w, w > -10)["params"]))(wav)


def jitted(params, **kw):
    """The encoder's whole-grid forward pass, compiled (one program per input shape)."""
    return jax.jit(lambda w, m: Encoder(TINY).apply({"params": params}, w, m, **kw))


def test_config_round_trip_properties_and_errors():
    cfg = config_from({"architecture": "patches", **{k: v for k, v in TINY.to_dict().items() if k != "architecture"}})
    assert cfg == TINY and Config.from_config(TINY.to_dict()) == TINY
    assert cfg.freq_patches == 5 and cfg.hidden_size == 160 and cfg.downsampling == 640 and cfg.num_layers == 2
    # 16000 samples: 98 frames of 10 ms -> 24 patches of 4; 880 samples (400 + 3 x 160): 4 frames -> 1 patch.
    lengths = np.array([16000, 880, 879, 0])
    np.testing.assert_array_equal(cfg.frame_lengths(lengths), [24, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(cfg.frame_lengths(jnp.asarray(lengths))), [24, 1, 0, 0])
    with pytest.raises(ValueError, match="patch_tme.*valid keys.*patch_time"):
        Config.from_config({"patch_tme": 4})
    with pytest.raises(ValueError, match="divide"):
        Config(patch_freq=15)
    with pytest.raises(ValueError, match="logmel"):
        Config(frontend="conv")
    assert Config().downsampling == 2560 and Config().hidden_size == 5 * 768


def test_patches_are_standardised_log_mel_blocks():
    wav = noise(2, 8000, seed=1)
    mask = np.ones((2, 8000), bool)
    mask[1, 5000:] = False
    x, time_mask = patchify(TINY, jnp.asarray(wav), jnp.asarray(mask))
    assert x.shape == (2, 12, 5, 64)
    np.testing.assert_array_equal(np.asarray(time_mask).sum(1), TINY.frame_lengths(mask.sum(1)))
    mel, _ = LogMelFrontend(80, 400, 160, 1, "none").apply({}, jnp.asarray(np.where(mask, wav, 0)), jnp.asarray(mask.sum(1)))
    mel = (np.asarray(mel) + 10.0) / 4.0
    t, f = 3, 2  # patch (time 3, band 2): frames 12..15, bins 32..47, time-major
    np.testing.assert_allclose(np.asarray(x[0, t, f]), mel[0, 12:16, 32:48].reshape(-1), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(x[1, int(time_mask[1].sum()):]) == 0.0)


def test_sincos_positions_separate_time_and_frequency():
    idx = jnp.arange(20)  # 4 time steps x 5 bands
    pos = np.asarray(sincos_positions(idx, 5, 16))
    assert pos.shape == (20, 16)
    np.testing.assert_allclose(pos[0], [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4, atol=1e-7)
    # First half: time only; second half: band only.
    np.testing.assert_allclose(pos[7, :8], pos[5, :8])  # same time step 1
    np.testing.assert_allclose(pos[7, 8:], pos[2, 8:])  # same band 2
    assert len({tuple(np.round(p, 5)) for p in pos}) == 20


def test_forward_shapes_padding_and_pooled(params):
    run = jitted(params)
    wav = noise(2, 8000, seed=2)
    mask = np.ones((2, 8000), bool)
    mask[1, 5000:] = False
    out = run(wav, mask)
    assert isinstance(out, EncoderOutput) and len(out.hidden_states) == 3
    assert all(h.shape == (2, 12, 160) for h in out.hidden_states) and out.last_hidden_state.shape == (2, 12, 160)
    n = int(TINY.frame_lengths(np.array([5000]))[0])
    np.testing.assert_array_equal(np.asarray(out.frame_mask).sum(1), [12, n])
    np.testing.assert_allclose(np.asarray(out.pooled[1]), np.asarray(out.last_hidden_state[1, :n]).mean(0), rtol=1e-5, atol=1e-6)
    # Item 1 alone, and with garbage in its padding: the same valid frames.
    alone = run(wav[1:, :5000], mask[1:, :5000])
    garbage = wav.copy()
    garbage[1, 5000:] = 3.0
    noisy = run(garbage, mask)
    for a, b, c in zip(out.hidden_states, alone.hidden_states, noisy.hidden_states):
        np.testing.assert_allclose(np.asarray(a[1, :n]), np.asarray(b[0]), atol=2e-5)
        np.testing.assert_allclose(np.asarray(a[1, :n]), np.asarray(c[1, :n]), atol=2e-5)
        assert np.all(np.asarray(a[1, n:]) == 0.0)


def test_subset_encoding_reads_only_its_patches_and_follows_indices(params):
    enc = Encoder(TINY)
    x, _ = patchify(TINY, jnp.asarray(noise(1, 8000, seed=3)), jnp.ones((1, 8000), bool))
    flat = x.reshape(1, 60, 64)
    index = jnp.asarray([[3, 17, 40, 41, 59]], jnp.int32)
    valid = jnp.asarray([[True, True, True, True, False]])
    run = jax.jit(lambda p, i, v: enc.apply({"params": params}, p, i, v, method=Encoder.encode_patches))
    hidden, last, cls = run(flat, index, valid)
    assert last.shape == (1, 5, 32) and cls.shape == (1, 32) and len(hidden) == 3
    # Patches outside the valid subset (incl. the padded entry 59) never matter.
    other = np.ones(60, bool)
    other[[3, 17, 40, 41]] = False
    changed = jnp.where(jnp.asarray(other)[None, :, None], 7.0, flat)
    _, last2, cls2 = run(changed, index, valid)
    np.testing.assert_allclose(np.asarray(last2[:, :4]), np.asarray(last[:, :4]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(cls2), np.asarray(cls), atol=1e-5)
    # Order does not matter, positions come from the indices; a changed subset patch matters.
    perm = jnp.asarray([2, 0, 3, 1, 4])
    _, last3, _ = run(flat, index[:, perm], valid[:, perm])
    np.testing.assert_allclose(np.asarray(last3[:, :4]), np.asarray(last[:, perm][:, :4]), atol=1e-5)
    _, last4, _ = run(flat.at[0, 17].add(1.0), index, valid)
    assert float(jnp.abs(last4[:, :4] - last[:, :4]).max()) > 1e-3


def test_mask_time_indices_remove_frames_from_attention(params):
    enc = Encoder(TINY)
    wav = noise(1, 8000, seed=4)
    mask = np.ones((1, 8000), bool)
    drop = np.zeros((1, 12), bool)
    drop[0, [2, 3, 7]] = True
    out = jax.jit(lambda w, m, d: enc.apply({"params": params}, w, m, mask_time_indices=d))(wav, mask, jnp.asarray(drop))
    x, _ = patchify(TINY, jnp.asarray(wav), jnp.asarray(mask))
    keep_t = np.flatnonzero(~drop[0])
    index = jnp.asarray((keep_t[:, None] * 5 + np.arange(5)).reshape(1, -1), jnp.int32)
    _, last, _ = jax.jit(lambda p, i: enc.apply({"params": params}, p, i, jnp.ones(i.shape, bool),
                                                method=Encoder.encode_patches))(x.reshape(1, 60, 64), index)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state[0, keep_t]), np.asarray(frames_of(last, 5)[0]), atol=1e-5)
    with pytest.raises(ValueError, match="mask_time_indices"):
        enc.apply({"params": params}, wav, mask, mask_time_indices=jnp.zeros((1, 11), bool))


def test_upstream_embeds_frames_of_concatenated_bands(params):
    from ssl_jax.upstream import Upstream

    cfg = dataclasses.replace(TINY, num_layers=2)
    up = Upstream(params, cfg.to_dict(), min_samples=8000)
    assert up.dim == 160 and up.num_hidden_states == 3 and up.frame_rate == 25.0
    wavs = [noise(1, 7000, seed=5)[0], noise(1, 4000, seed=6)[0]]
    feats = up.embed(wavs, batch_size=2)
    assert [f.shape for f in feats] == [(3, int(cfg.frame_lengths(np.array([n]))[0]), 160) for n in (7000, 4000)]
    single = up.embed(wavs[1:], batch_size=1)[0]
    np.testing.assert_allclose(feats[1], single, atol=2e-5)
    assert encoder_module(cfg).__class__ is Encoder
