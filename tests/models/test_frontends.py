"""Tests for ssl_jax/models/frontends.py and the encoder's log-mel front end."""

import jax
import numpy as np
import pytest

from ssl_jax.models.encoder import EncoderConfig, SpeechEncoder, frame_lengths
from ssl_jax.models.frontends import LogMelFrontend, logmel_frame_lengths

LOGMEL = EncoderConfig(frontend="logmel", hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                       num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, hidden_dropout=0.0,
                       attention_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)


def _wavs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    wavs = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * rng.standard_normal(n)
    return wavs


def test_matches_librosa_log_mel_without_centring():
    librosa = pytest.importorskip("librosa")
    wav = _wavs([8000])[0]
    out, n = LogMelFrontend(stack=1).apply({}, wav[None], np.array([8000]))
    ref = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, center=False,
                                         n_mels=80, power=2.0, window="hann")
    ref = np.log(np.maximum(ref, 1e-10)).T
    assert int(n[0]) == ref.shape[0] == (8000 - 400) // 160 + 1
    np.testing.assert_allclose(np.asarray(out[0, : int(n[0])]), ref, atol=2e-3, rtol=1e-4)


def test_stacking_padding_and_utterance_norm():
    lengths = [8000, 5123]
    wavs = _wavs(lengths)
    front = LogMelFrontend(stack=2, norm="utterance")
    out, n = front.apply({}, wavs, np.array(lengths))
    np.testing.assert_array_equal(n, logmel_frame_lengths(np.array(lengths), 400, 160, 2))
    assert out.shape == (2, int(n[0]), 160)
    alone, m = front.apply({}, wavs[1:, : lengths[1]], np.array(lengths[1:]))
    k = int(n[1])
    assert int(m[0]) == k and np.all(np.asarray(out[1, k:]) == 0.0)
    np.testing.assert_allclose(np.asarray(out[1, :k]), np.asarray(alone[0, :k]), atol=1e-5)
    # Per-utterance standardisation is over every 10 ms frame, before stacking.
    frames = np.asarray(out[0, : int(n[0])]).reshape(-1, 80)
    np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(frames.std(0), 1.0, atol=1e-2)


def test_encoder_with_log_mel_front_end():
    lengths = np.array([16000, 9000])
    wavs = _wavs(list(lengths), seed=1)
    mask = np.arange(wavs.shape[1])[None] < lengths[:, None]
    model = SpeechEncoder(LOGMEL)
    params = jax.jit(model.init)(jax.random.key(0), wavs, mask)["params"]
    assert "frontend" not in params and "feature_extractor" not in params
    out = model.apply({"params": params}, wavs, mask)
    assert LOGMEL.downsampling == 320
    np.testing.assert_array_equal(out.frame_mask.sum(-1), frame_lengths(LOGMEL, lengths))
    assert out.hidden_states[0].shape == (2, int(frame_lengths(LOGMEL, lengths)[0]), 16)
    assert float(out.feature_penalty) == 0.0
    alone = model.apply({"params": params}, wavs[1:, :9000], mask[1:, :9000])
    k = int(frame_lengths(LOGMEL, 9000))
    for a, b in zip(out.hidden_states, alone.hidden_states):
        np.testing.assert_allclose(np.asarray(a[1, :k]), np.asarray(b[0, :k]), atol=1e-5)
    with pytest.raises(ValueError, match="frontend must be"):
        EncoderConfig(frontend="mfcc")


def test_log_mel_models_do_not_export_to_transformers():
    from ssl_jax import convert

    with pytest.raises(convert.ConversionError, match="no transformers counterpart"):
        convert.hf_config_from_encoder(LOGMEL, "wav2vec2")
