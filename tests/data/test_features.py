"""Parity of ssl_jax/data/features.py with librosa, padding awareness and deltas."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from ssl_jax.data import features as F

SR = 16_000
LENGTHS = [16_000, 12_345, 7_001]


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    wavs = np.zeros((3, max(LENGTHS)), np.float32)
    for i, n in enumerate(LENGTHS):
        t = np.arange(n) / SR
        wavs[i, :n] = (0.5 * np.sin(2 * np.pi * (200 + 100 * i) * t * (1 + t))
                       + 0.05 * rng.standard_normal(n))
    # Garbage beyond the lengths must not leak into features.
    for i, n in enumerate(LENGTHS):
        wavs[i, n:] = 0.7
    return wavs, np.asarray(LENGTHS, np.int32)


@pytest.mark.parametrize("kw", [dict(n_mels=80), dict(n_mels=40, fmin=20.0, fmax=7600.0, htk=True,
                                                      norm=None)])
def test_mel_filterbank_matches_librosa(kw):
    ours = F.mel_filterbank(SR, 512, kw.pop("n_mels"), **kw)
    ref = librosa.filters.mel(sr=SR, n_fft=512, n_mels=ours.shape[1], **kw)
    np.testing.assert_allclose(ours.T, ref, rtol=1e-5, atol=1e-7)


def test_melspectrogram_and_db_match_librosa(batch):
    wavs, lengths = batch
    kw = dict(n_fft=512, hop_length=160, win_length=400, n_mels=64)
    mel, n = F.mel_spectrogram(wavs, lengths, **kw)
    db, n_db = F.log_mel(wavs, lengths, top_db=80.0, **kw)
    np.testing.assert_array_equal(n, 1 + lengths // 160)
    np.testing.assert_array_equal(n_db, n)
    assert mel.shape == (3, 1 + wavs.shape[1] // 160, 64)
    for i, length in enumerate(lengths):
        ref = librosa.feature.melspectrogram(y=wavs[i, :length], sr=SR, **kw).T
        got = np.asarray(mel[i, :n[i]])
        assert got.shape == ref.shape
        # Relative 1e-4 per bin (floored at 1e-6 of the peak); measured about 1e-5.
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * ref.max())
        ref_db = librosa.power_to_db(ref.T, ref=1.0, amin=1e-10, top_db=80.0).T
        np.testing.assert_allclose(np.asarray(db[i, :n[i]]), ref_db, atol=1e-3)  # dB; ~3e-5
        assert not np.asarray(mel[i, n[i]:]).any() and not np.asarray(db[i, n[i]:]).any()


@pytest.mark.parametrize("lifter", [0, 22])
def test_mfcc_matches_librosa(batch, lifter):
    wavs, lengths = batch
    kw = dict(n_fft=400, hop_length=160, n_mels=40)
    got, n = F.mfcc(wavs, lengths, n_mfcc=13, lifter=lifter, **kw)
    for i, length in enumerate(lengths):
        ref = librosa.feature.mfcc(y=wavs[i, :length], sr=SR, n_mfcc=13, lifter=lifter, **kw).T
        # Coefficients reach ~1e2 here; measured error about 5e-5.
        np.testing.assert_allclose(np.asarray(got[i, :n[i]]), ref, atol=1e-3)


def test_fbank_is_80_bin_log_mel_25ms_10ms(batch):
    wavs, lengths = batch
    feats, n = jax.jit(F.fbank)(jnp.asarray(wavs), jnp.asarray(lengths))
    assert feats.shape == (3, 101, 80) and feats.dtype == jnp.float32
    np.testing.assert_array_equal(n, 1 + lengths // 160)
    ref = librosa.feature.melspectrogram(y=wavs[1, :lengths[1]], sr=SR, n_fft=400,
                                         hop_length=160, n_mels=80).T
    np.testing.assert_allclose(np.asarray(feats[1, :n[1]]), np.log(np.maximum(ref, 1e-10)),
                               atol=2e-3)


def test_padding_does_not_change_an_item(batch):
    wavs, lengths = batch
    alone, n_alone = F.mfcc(wavs[2:, :lengths[2]])
    padded, n = F.mfcc(wavs, lengths)
    assert int(n_alone[0]) == int(n[2])
    np.testing.assert_allclose(np.asarray(padded[2, :n[2]]), np.asarray(alone[0]), atol=1e-4)


def test_deltas_match_a_loop():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((2, 9, 3)).astype(np.float32)
    n = np.array([9, 5], np.int32)
    got = np.asarray(F.deltas(feats, n, width=2))
    for b in range(2):
        for t in range(9):
            if t >= n[b]:
                assert not got[b, t].any()
                continue
            want = sum(k * (feats[b, min(t + k, n[b] - 1)] - feats[b, max(t - k, 0)])
                       for k in (1, 2)) / 10.0
            np.testing.assert_allclose(got[b, t], want, atol=1e-6)


def test_bad_shapes_and_options():
    with pytest.raises(ValueError, match="batch, samples"):
        F.spectrogram(jnp.zeros((16_000,)))
    with pytest.raises(ValueError, match="log scale"):
        F.log_mel(jnp.zeros((1, 800)), scale="log2")
