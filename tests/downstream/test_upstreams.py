"""Tests for ssl_jax/downstream/upstreams.py: the spectral baselines, the random-init encoder, `load`."""

import os

import numpy as np
import pytest

from ssl_jax.data import features
from ssl_jax.downstream import upstreams

TINY_RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "w2v2_tiny.py")


def _deltas(c: np.ndarray, width: int = 2) -> np.ndarray:
    """HTK regression deltas of [frames, dim], edge frames repeated (an independent numpy version)."""
    padded = np.concatenate([np.repeat(c[:1], width, 0), c, np.repeat(c[-1:], width, 0)])
    t = np.arange(len(c)) + width
    num = sum(k * (padded[t + k] - padded[t - k]) for k in range(1, width + 1))
    return num / (2 * sum(k * k for k in range(1, width + 1)))


def test_fbank_and_mfcc_equal_the_clip_alone_and_compile_few_programs():
    rng = np.random.default_rng(0)
    lengths = rng.permutation(np.arange(1600, 48000, 928))  # 50 distinct lengths, 0.1-3 s
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    fb, mf = upstreams.load("fbank"), upstreams.load("mfcc")
    assert (fb.name, fb.dim, fb.frame_rate, mf.name, mf.dim) == ("fbank", 80, 100.0, "mfcc", 39)
    for c in clips:
        out = fb(c[None], np.array([len(c)]))
        assert out.hidden_states[0].shape == (1, 1 + len(c) // 160, 80) and out.lengths.tolist() == [1 + len(c) // 160]
    assert fb.num_compiles <= 5
    fb_all, mf_all = fb.embed(clips), mf.embed(clips, batch_size=4)
    assert mf.num_compiles <= 5
    for i in (int(np.argmin(lengths)), int(np.argmax(lengths))):
        c = clips[i]
        ref, _ = features.fbank(c[None])
        np.testing.assert_allclose(fb_all[i][0], np.asarray(ref)[0], atol=1e-4)
        m, _ = features.mfcc(c[None], n_mfcc=13, n_fft=400, hop_length=160)
        m = np.asarray(m)[0]
        d = _deltas(m)
        np.testing.assert_allclose(mf_all[i][0], np.concatenate([m, d, _deltas(d)], -1), atol=1e-3)
        assert fb_all[i].shape == (1, 1 + len(c) // 160, 80) and mf_all[i].shape == (1, 1 + len(c) // 160, 39)


def test_random_init_upstream():
    up = upstreams.load(f"random:{TINY_RECIPE}")
    assert (up.name, up.num_layers, up.dim, up.frame_rate, up.normalize) == ("random-w2v2_tiny", 4, 128, 50.0, False)
    (out,) = up.embed([np.random.default_rng(0).standard_normal(8000).astype(np.float32)], batch_size=1)
    assert out.shape == (5, 24, 128) and np.isfinite(out).all() and out.std() > 0


def test_load_specs():
    assert upstreams.load("fbank", normalize=True).normalize is True
    assert upstreams.load("mfcc").normalize is False
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        upstreams.load("/nowhere/at/all")
    with pytest.raises(FileNotFoundError):
        upstreams.load(f"random:{os.path.dirname(TINY_RECIPE)}/nothing.py")
