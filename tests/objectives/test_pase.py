"""Tests for ssl_jax/objectives/pase.py (PASE+ workers) and the non-centred features it reads."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.data import features as F
from ssl_jax.objectives import pase
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tones
from tests.objectives import ema_helpers

SR = 16_000
LENGTHS = (8000, 6123)


def pase_config(**model):
    """configs/pase_tiny.py shrunk: 16 log-mel bins, one GRU of 32, workers of 32."""
    c = load_config_file(os.path.join(ROOT, "configs", "pase_tiny.py"))
    c.train.abx_probe.speakers = 0
    c.model.update(logmel_bins=16, hidden_size=32, num_layers=1)
    c.model.update(model)
    c.objective.worker_hidden = 32
    return c


@pytest.fixture(scope="module")
def obj():
    return objectives.build(pase_config())


@pytest.fixture(scope="module")
def targets(obj):
    """`obj.targets`, compiled (batch, frames) -> ({worker: [batch, frames, dim]}, valid)."""
    return jax.jit(obj.targets, static_argnums=1)


def _worker_targets(wavs, lengths):
    return jax.jit(lambda x, n: pase.worker_targets(x, n, pase.WORKERS, window=400, hop=160))(
        jnp.asarray(wavs, jnp.float32), jnp.asarray(lengths))


def _batch(wavs, lengths=LENGTHS):
    wavs = np.array(wavs, np.float32)
    mask = np.arange(wavs.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return {"audio": jnp.asarray(np.where(mask, wavs, 0.0)), "audio_mask": jnp.asarray(mask)}


def _tone(samples=SR, seed=0):
    t = np.arange(samples) / SR
    noise = np.random.default_rng(seed).standard_normal(samples)
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t * (1 + t)) + 0.01 * noise).astype(np.float32)


def test_frame_targets_match_librosa_on_a_tone():
    x = _tone()
    got, n = _worker_targets(x[None], [SR])
    frames = (SR - 400) // 160 + 1
    assert int(n[0]) == frames
    assert {k: v.shape for k, v in got.items()} == {"wave": (1, frames, 160), "lps": (1, frames, 201), "fbank": (1, frames, 40),
                                                   "mfcc": (1, frames, 20), "prosody": (1, frames, 4)}
    power = np.abs(librosa.stft(x, n_fft=400, hop_length=160, center=False)) ** 2
    np.testing.assert_allclose(got["lps"][0], np.log(np.maximum(power, 1e-10)).T, atol=1e-2)  # ln; ~1e-3 measured
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=400, hop_length=160, n_mels=40, center=False)
    np.testing.assert_allclose(got["fbank"][0], np.log(np.maximum(mel, 1e-10)).T, atol=1e-3)
    mfcc = librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20, n_fft=400, hop_length=160, n_mels=40, center=False)
    np.testing.assert_allclose(got["mfcc"][0], mfcc.T, atol=1e-4 * np.abs(mfcc).max())  # ~4e-7 x peak measured
    zcr = librosa.feature.zero_crossing_rate(x, frame_length=400, hop_length=160, center=False)
    np.testing.assert_allclose(got["prosody"][0, :, 1], zcr[0], atol=1e-6)
    np.testing.assert_allclose(got["wave"][0, 7], x[7 * 160 + 120 : 7 * 160 + 280])  # the centre of frame 7's window


_pitch = jax.jit(lambda x: pase.pitch(F.frames(x)[0]))


@pytest.mark.parametrize("f0", [100.0, 180.0, 310.0])
def test_pitch_follows_a_harmonic_tone_and_not_noise(f0):
    t = np.arange(SR) / SR
    x = (np.sin(2 * np.pi * f0 * t) + 0.6 * np.sin(2 * np.pi * 2 * f0 * t + 1.0) + 0.3 * np.sin(2 * np.pi * 3 * f0 * t))
    got, voicing = _pitch(jnp.asarray(x[None], jnp.float32))
    np.testing.assert_allclose(np.median(np.asarray(got)), f0, rtol=0.01)
    assert np.min(np.asarray(voicing)) > 0.9
    _, v_noise = _pitch(jnp.asarray(np.random.default_rng(1).standard_normal((1, SR)), jnp.float32))
    assert np.median(np.asarray(v_noise)) < 0.3


def _random_params(obj, batch, seed=0):
    """Parameters of the right shapes drawn on the host (no compiled initialisation)."""
    rng = np.random.default_rng(seed)
    shapes = nn.unbox(jax.eval_shape(obj.init, jax.random.key(0), batch))
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)


def test_targets_align_with_the_encoder_frames_and_ignore_padding(obj, targets):
    wavs = tones(2, 8000, seed=3)
    batch = _batch(wavs)
    num = int(obj.encoder_config.frame_lengths(np.asarray(8000)))
    raw, valid = targets(batch, num)
    np.testing.assert_array_equal(valid.sum(1), obj.encoder_config.frame_lengths(np.asarray(LENGTHS)))
    # frame t reads samples [t * 160, t * 160 + 400): the crops started k frames later give frame t + k
    k = 7
    later, valid_later = targets(_batch(np.pad(wavs[:, k * 160 :], ((0, 0), (0, k * 160))), np.asarray(LENGTHS) - k * 160), num)
    np.testing.assert_array_equal(valid_later.sum(1), valid.sum(1) - k)
    for b, n in enumerate(np.asarray(valid_later.sum(1))):
        for w in ("wave", "lps", "fbank", "prosody"):  # (an MFCC's top_db is per utterance)
            got, ref = np.asarray(later[w][b, :n]), np.asarray(raw[w][b, k : k + n])
            if w == "prosody":  # log F0 of unvoiced frames is the utterance's voiced mean
                voiced = ref[:, 2] > pase.VOICED
                got, ref = got[voiced], ref[voiced]
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4, err_msg=w)
    # samples past the lengths change nothing: not the targets, not the loss
    garbage = dict(batch, audio=jnp.where(batch["audio_mask"], batch["audio"], 0.7))
    raw_g, _ = targets(garbage, num)
    for w in pase.WORKERS:
        np.testing.assert_array_equal(raw[w], raw_g[w], err_msg=w)
    params = _random_params(obj, batch)
    loss = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(0), 0, False, {}))
    (l0, m0), (l1, m1) = loss(params, batch), loss(params, garbage)
    assert float(l0) == pytest.approx(float(l1), rel=1e-6)
    assert {k: float(v) for k, v in m0.items()} == pytest.approx({k: float(v) for k, v in m1.items()}, rel=1e-5)
    assert float(m0["masked_frames"]) == float(valid.sum())


def test_targets_come_from_the_clean_audio(obj, targets):
    clean = tones(2, 8000, seed=4)
    noisy = clean + 0.5 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    num = int(obj.encoder_config.frame_lengths(np.asarray(8000)))
    contaminated = dict(_batch(noisy), clean_audio=_batch(clean)["audio"])
    from_clean, _ = targets(contaminated, num)
    ref_clean, _ = targets(_batch(clean), num)
    ref_noisy, _ = targets(_batch(noisy), num)
    for w in pase.WORKERS:
        np.testing.assert_array_equal(from_clean[w], ref_clean[w], err_msg=w)
        assert not np.allclose(from_clean[w], ref_noisy[w], atol=1e-2), w


def test_each_worker_learns_and_the_tiny_objective_overfits_a_batch(obj):
    batch = _batch(tones(4, 8000), lengths=(8000, 8000, 7000, 6000))
    _, _, history = ema_helpers.train(obj, batch, 40, lr=1e-2)
    first, last = history[0], history[-1]
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    for w in pase.WORKERS:
        assert last[f"loss_{w}"] < 0.9 * first[f"loss_{w}"], (w, first, last)
    assert list(obj.SUMMARY)[0] == "loss_mfcc" and set(obj.SUMMARY) == {f"loss_{w}" for w in pase.WORKERS}


def test_a_waveform_encoder_scores_only_the_frames_it_has():
    """The paper's conv front end (shrunk): its receptive field outgrows the 400-sample target
    window, so it has fewer frames than the targets; only the encoder's frames are scored."""
    c = pase_config(frontend="conv", conv_dim=(8,) * 5, conv_kernel=(251, 20, 11, 11, 11), conv_stride=(1, 10, 2, 2, 4))
    obj = objectives.build(c)
    batch = _batch(tones(2, 8000, seed=5))
    loss, m = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(0), 0, False, {}))(_random_params(obj, batch), batch)
    enc = obj.encoder_config.frame_lengths(np.asarray(LENGTHS))
    assert (enc < (np.asarray(LENGTHS) - 400) // 160 + 1).all()
    assert float(m["masked_frames"]) == enc.sum() and np.isfinite(float(loss))


@pytest.mark.parametrize("change, match", [
    (dict(workers=("wave", "pitch")), "distinct workers"),
    (dict(l1_workers=("lps",), workers=("wave",)), "l1_workers"),
    (dict(window=100), "frame step"),
    (dict(f0_range=(10.0, 30.0)), "pitch lags"),
])
def test_bad_objective_settings_are_clear_errors(change, match):
    c = pase_config()
    c.objective.update(change)
    with pytest.raises(ValueError, match=match):
        objectives.build(c)
    c = pase_config()
    c.model = load_config_file(os.path.join(ROOT, "configs", "w2v2_tiny.py")).model
    with pytest.raises(ValueError, match="frame encoder"):
        objectives.build(c)
