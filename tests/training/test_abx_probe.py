"""Tests for the in-training ABX probe (ssl_jax/training/abx_probe.py)."""

import jax
import numpy as np
import pytest

from ssl_jax.models.encoder import EncoderConfig, SpeechEncoder
from ssl_jax.training import abx_probe
from tests.helpers import tiny_config


def _encoder_params(config, seed):
    model = SpeechEncoder(EncoderConfig.from_config(config.model))
    wavs = np.zeros((1, 16000), np.float32)
    return model.init(jax.random.key(seed), wavs, np.ones_like(wavs, bool), deterministic=True)["params"]


def test_probe_scores_every_layer_and_follows_new_weights(tiny_eval_corpus):
    config = tiny_config()
    probe = abx_probe.AbxProbe(config.model, speakers=3, triplets=400, shard_dir=tiny_eval_corpus)
    assert len({it.speaker for it in probe.items}) == 3 and len(probe.wavs) == len({it.utt for it in probe.items})
    a, b = _encoder_params(config, 0), _encoder_params(config, 1)
    first = probe(a)
    layers = config.model.num_layers + 1
    assert {f"abx_word_l{k}" for k in range(layers)} <= set(first)
    assert 0 <= first["abx_layer"] < layers and 0.0 <= first["abx_word"] <= 1.0
    compiles = probe._upstream.num_compiles
    second = probe(b)  # new weights through set_state: no new programs ...
    assert probe._upstream.num_compiles == compiles
    fresh = abx_probe.AbxProbe(config.model, speakers=3, triplets=400, shard_dir=tiny_eval_corpus)(b)
    for k in first:  # ... and the same figures as a probe built on those weights
        if k != "abx_seconds":
            assert second[k] == pytest.approx(fresh[k]), k
    assert any(second[f"abx_word_l{k}"] != first[f"abx_word_l{k}"] for k in range(1, layers))
    assert probe(a)["abx_word"] == pytest.approx(first["abx_word"])


def test_probe_config_errors(tiny_eval_corpus):
    config = tiny_config()
    assert abx_probe.from_config(config) is None  # off by default
    with pytest.raises(ValueError, match="at least 2"):
        abx_probe.AbxProbe(config.model, speakers=1, triplets=400, shard_dir=tiny_eval_corpus)
    with pytest.raises(ValueError, match="speakers"):
        abx_probe.AbxProbe(config.model, speakers=10_000, triplets=400, shard_dir=tiny_eval_corpus)
