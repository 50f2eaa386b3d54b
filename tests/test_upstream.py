"""Tests for ssl_jax/upstream.py."""

import dataclasses
import math

import jax
import numpy as np
import pytest
from flax.core import meta

from ssl_jax.models.encoder import EncoderConfig, SpeechEncoder, frame_lengths
from ssl_jax.upstream import LengthLadder, Upstream, batch_bucket, normalize_waveforms

TINY = EncoderConfig(
    conv_dim=(4, 4, 4), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), hidden_size=8, num_layers=2, num_heads=2, intermediate_size=16,
    num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
)
# 320x down-sampling (50 Hz frames, like BASE) in three convolutions and one Transformer layer:
# few frames and quick compiles (each layer adds to the compile time of every program).
SMALL = EncoderConfig(
    conv_dim=(8, 8, 8), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8), hidden_size=8, num_layers=1, num_heads=2,
    intermediate_size=16, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
)


def random_params(cfg: EncoderConfig, seed: int = 0):
    """Random encoder weights without compiling an init: shapes from eval_shape, values from numpy."""
    wav = np.zeros((1, 4000), np.float32)
    shapes = meta.unbox(jax.eval_shape(lambda: SpeechEncoder(cfg).init(jax.random.key(0), wav, wav > -1))["params"])
    rng = np.random.default_rng(seed)

    def draw(s):
        if len(s.shape) > 1:
            return rng.standard_normal(s.shape) / math.sqrt(math.prod(s.shape[:-1]))
        return 1.0 + 0.1 * rng.standard_normal(s.shape)

    return jax.tree.map(lambda s: draw(s).astype(np.float32), shapes)


def alone(cfg: EncoderConfig, params, wav: np.ndarray, normalize: bool = False) -> np.ndarray:
    """One clip through `SpeechEncoder.apply` at its own length, no padding: [layers, frames, dim]."""
    x = wav[None]
    if normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    out = jax.jit(SpeechEncoder(cfg).apply)({"params": params}, x, np.ones(x.shape, bool))
    return np.stack([np.asarray(h)[0] for h in out.hidden_states])


def test_ladder_and_batch_buckets():
    ladder = LengthLadder(multiple=320)
    assert [ladder.rung(k) for k in range(5)] == [16000, 22720, 32000, 45440, 64000]
    rungs = sorted({ladder(n) for n in range(1, 16000 * 180, 997)})
    assert all(r % 320 == 0 for r in rungs) and rungs[0] == 16000
    assert len(rungs) <= 1 + math.ceil(math.log(180) / math.log(math.sqrt(2)))
    assert all(1.3 < b / a < 1.5 for a, b in zip(rungs, rungs[1:]))
    for n in (1, 15999, 16000, 16001, 22000, 10**6):
        assert n <= ladder(n) and (ladder(n) == 16000 or ladder(n) / n < math.sqrt(2) + 0.05)
    assert [batch_bucket(n, 64) for n in (1, 2, 3, 5, 8, 9, 64)] == [1, 2, 4, 8, 8, 16, 64]
    with pytest.raises(ValueError):
        LengthLadder(multiple=320, ratio=1.0)


def test_load_random_checkpoint_shapes_and_padding(tmp_path):
    from ssl_jax.training.checkpoint import save_pretrained

    params = random_params(TINY)
    save_pretrained(str(tmp_path), {"encoder": params}, {"model": TINY.to_dict(), "data": {"normalize": True}})
    up = Upstream.load(str(tmp_path))
    assert (up.num_layers, up.dim, up.frame_rate, up.normalize) == (2, 8, 16000 / 20, True)
    assert Upstream.load(str(tmp_path), normalize=False).normalize is False
    assert Upstream(params, EncoderConfig()).frame_rate == 50.0
    up = Upstream(params, TINY)
    rng = np.random.default_rng(0)
    lengths = np.array([2000, 1300])
    wavs = rng.standard_normal((2, 2000)).astype(np.float32)
    out = up(wavs, lengths)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 99, 8)
    np.testing.assert_array_equal(out.lengths, frame_lengths(TINY, lengths))
    single = up(wavs[1:, :1300], lengths[1:])
    n = int(out.lengths[1])
    for a, b in zip(out.hidden_states, single.hidden_states):
        np.testing.assert_allclose(a[1, :n], b[0], atol=2e-5)
    with pytest.raises(ValueError):
        up(wavs[0], lengths)
    with pytest.raises(ValueError, match="lengths"):
        up(wavs, np.array([2000, 2001]))


def test_any_mix_of_lengths_compiles_a_bounded_number_of_programs():
    params = random_params(SMALL)
    up = Upstream(params, SMALL)
    rng = np.random.default_rng(0)
    # 0.1-2 s, all distinct: three rungs (16000, 22720, 32000 samples), kept few for compile time.
    lengths = rng.permutation(np.round(np.linspace(1600, 32000, 300)).astype(int))
    assert len(set(lengths.tolist())) == 300
    clips = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    one = []
    for c in clips:
        out = up(c[None], np.array([len(c)]))
        assert out.hidden_states[0].shape == (1, int(frame_lengths(SMALL, len(c))), 8)
        one.append(np.stack([h[0] for h in out.hidden_states]))
    embedded = up.embed(clips, batch_size=8)
    # One program per rung for single clips and one per rung for batches of 8.
    assert up.num_compiles == 2 * len({up.ladder(int(n)) for n in lengths}) <= 12
    for a, b in zip(one, embedded):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Against the clip alone, unpadded: the shortest (most padding) and the clip just above a rung
    # (the next rung is ~40% longer).
    above = int(np.argmin(np.where(lengths > up.ladder.rung(0), lengths, 10**9)))
    for i in (int(np.argmin(lengths)), above):
        np.testing.assert_allclose(embedded[i], alone(SMALL, params, clips[i]), atol=1e-5)


def test_padding_invariance_of_the_other_variants():
    cfg = dataclasses.replace(SMALL, feat_extract_norm="layer", conv_bias=True, layer_norm_first=True,
                              num_pos_conv_layers=2, relative_position_buckets=16, relative_position_max_distance=40)
    params = random_params(cfg, seed=1)
    up = Upstream(params, cfg, normalize=True)
    rng = np.random.default_rng(1)
    clips = [(0.3 * rng.standard_normal(n) + 0.1).astype(np.float32) for n in (900, 7000, 15000)]
    for clip, out in zip(clips, up.embed(clips, batch_size=4)):
        np.testing.assert_allclose(out, alone(cfg, params, clip, normalize=True), atol=1e-5)
    assert up.num_compiles == 1


def test_call_pads_and_chunks_the_batch():
    params = random_params(SMALL)
    up = Upstream(params, SMALL, max_batch=2)
    rng = np.random.default_rng(2)
    lengths = np.array([17000, 22000, 18000, 21000, 19000])  # one rung
    wavs = rng.standard_normal((5, 23000)).astype(np.float32)
    out = up(wavs, lengths)
    assert out.hidden_states[0].shape == (5, int(frame_lengths(SMALL, 23000)), 8)
    assert up.num_compiles == 2  # chunks of 2, 2 and 1 rows
    for i, n in enumerate(lengths):
        single = up(wavs[i:i + 1, :n], lengths[i:i + 1])
        t = int(out.lengths[i])
        for a, b in zip(out.hidden_states, single.hidden_states):
            np.testing.assert_allclose(a[i, :t], b[0], atol=1e-5)
    assert up.num_compiles == 2
    picked = up.embed([wavs[0, :17000]], layers=[1, 0], batch_size=2)
    assert picked[0].shape == (2, int(out.lengths[0]), 8)
    np.testing.assert_allclose(picked[0][1], out.hidden_states[0][0, : int(out.lengths[0])], atol=1e-5)
    last = up.embed([wavs[0, :17000]], layers=-1, batch_size=2)[0]
    np.testing.assert_allclose(last, out.hidden_states[-1][0, : int(out.lengths[0])], atol=1e-5)
    assert up.num_compiles == 2


def test_embed_rejects_bad_input():
    up = Upstream(random_params(SMALL), SMALL)
    ok = np.zeros(1000, np.float32)
    for bad, match in [
        (np.zeros((2, 1000), np.float32), "list"),
        ([ok, np.zeros((2, 10), np.float32)], "waveform 1: expected a 1-D"),
        ([np.zeros(10, np.int16)], "float"),
        ([ok, np.zeros(0, np.float32)], "waveform 1 is empty"),
        ([np.array([0.0, np.nan], np.float32)], "non-finite"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            up.embed(bad)
    with pytest.raises(ValueError, match="layers"):
        up.embed([ok], layers="last")
    with pytest.raises(IndexError):
        up.embed([ok], layers=[2])
    assert up.num_compiles == 0


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
