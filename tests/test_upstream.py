"""Tests for ssl_jax/upstream.py."""

import jax
import numpy as np
import pytest
from flax.core import meta

from ssl_jax.models.encoder import EncoderConfig, SpeechEncoder, frame_lengths
from ssl_jax.upstream import Upstream, normalize_waveforms

TINY = EncoderConfig(
    conv_dim=(4, 4, 4), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), hidden_size=8, num_layers=2, num_heads=2, intermediate_size=16,
    num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
)


def test_load_random_checkpoint_shapes_and_padding(tmp_path):
    from ssl_jax.training.checkpoint import save_pretrained

    wav = np.zeros((1, 3200), np.float32)
    params = meta.unbox(jax.jit(SpeechEncoder(TINY).init)(jax.random.key(0), wav, wav > -1)["params"])
    save_pretrained(str(tmp_path), {"encoder": jax.tree.map(np.asarray, params)}, {"model": TINY.to_dict()})
    up = Upstream.load(str(tmp_path))
    assert (up.num_layers, up.dim, up.frame_rate) == (2, 8, 16000 / 20)
    assert Upstream(params, EncoderConfig()).frame_rate == 50.0
    rng = np.random.default_rng(0)
    lengths = np.array([2000, 1300])
    wavs = rng.standard_normal((2, 2000)).astype(np.float32)
    out = up(wavs, lengths)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 99, 8)
    np.testing.assert_array_equal(out.lengths, frame_lengths(TINY, lengths))
    alone = up(wavs[1:, :1300], lengths[1:])
    n = int(out.lengths[1])
    for a, b in zip(out.hidden_states, alone.hidden_states):
        np.testing.assert_allclose(np.asarray(a)[1, :n], np.asarray(b)[0], atol=2e-5)
    with pytest.raises(ValueError):
        up(wavs[0], lengths)


def test_normalize_waveforms_uses_valid_samples():
    x = np.random.default_rng(0).standard_normal((1, 100)).astype(np.float32) * 3 + 1
    mask = np.arange(100)[None] < 60
    y = np.asarray(normalize_waveforms(x, mask))
    np.testing.assert_allclose(y[0, :60].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(y[0, :60].std(), 1, atol=1e-3)
    assert np.all(y[0, 60:] == 0)


@pytest.mark.torch
def test_converted_checkpoint_matches_transformers_order(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from ssl_jax import convert
    from tests.test_convert import LENGTHS, batch, build_hf, hf_hidden_states

    model = build_hf("wav2vec2-layer-bias-stable")
    model.save_pretrained(tmp_path / "hf")
    convert.import_checkpoint("hf", str(tmp_path / "hf"), str(tmp_path / "ssl"))
    up = Upstream.load(str(tmp_path / "ssl"))
    assert up.num_layers == model.config.num_hidden_layers and up.dim == model.config.hidden_size
    wavs, _ = batch()
    out = up(wavs, np.array(LENGTHS))
    ref = hf_hidden_states(model, wavs, LENGTHS, padded=True)
    for b, items in enumerate(ref):
        assert int(out.lengths[b]) == items[0].shape[0]
        for r, o in zip(items, out.hidden_states):
            np.testing.assert_allclose(np.asarray(o)[b, : r.shape[0]], r, atol=3e-5)
    del torch
