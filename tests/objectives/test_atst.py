"""Tests for ssl_jax/objectives/atst.py: the log-mel augmentations, the views, the teacher and its
EMA, the masked tokens, padding, overfitting one batch at both levels, and the Upstream."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.objectives import atst
from ssl_jax.training.config_check import load_config_file
from tests.objectives import ema_helpers
from tests.helpers import ROOT, tones


def atst_config(level="frame"):
    c = load_config_file(f"{ROOT}/configs/atst_tiny.py" + (":clip" if level == "clip" else ""))
    c.model.update(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_conv_pos_embedding_groups=4,
                   logmel_bins=16)
    c.objective.update(head_hidden=64, head_dim=32)
    if level == "clip":
        c.objective.crop_seconds = 0.3
    return c


SAMPLES = 8000  # 0.5 s: 12 tokens


def batch_of(rows=4, samples=SAMPLES, seed=0, lengths=None):
    x = tones(rows, samples, seed=seed)
    mask = np.ones((rows, samples), bool)
    for i, n in enumerate(lengths or []):
        mask[i, n:] = False
        x[i, n:] = 0.0
    return {"audio": jnp.asarray(x), "audio_mask": jnp.asarray(mask)}


@functools.cache
def frame_objective():
    """The frame-level test objective and a fresh run's (params, state), as `ema_helpers.start`
    gives them (init jitted and shared by the tests that only read them)."""
    obj = objectives.build(atst_config())
    params = jax.jit(lambda k: nn.unbox(obj.init(k, batch_of(2))))(jax.random.key(0))
    return obj, params, obj.start_state({}, params)


def test_configs_build_and_bad_settings_fail_clearly():
    for spec in ("atst_tiny.py", "atst_tiny.py:clip", "atst_frame_base.py", "atst_clip_base.py"):
        c = load_config_file(f"{ROOT}/configs/{spec}")
        obj = objectives.build(c)
        assert obj.level == ("clip" if "clip" in spec else "frame")
        assert c.model.logmel_stack == 4 and 16000 // obj.encoder_config.downsampling == 25  # 40 ms tokens
    c = atst_config()
    c.model.frontend = "conv"
    with pytest.raises(ValueError, match="logmel"):
        objectives.build(c)
    c = atst_config()
    c.objective.level = "patch"
    with pytest.raises(ValueError, match="level"):
        objectives.build(c)
    with pytest.raises(ValueError, match="valid keys"):
        atst.ViewAugment.from_config({"mixup": 0.4, "specaug": 1})
    with pytest.raises(ValueError, match="mixup"):
        atst.ViewAugment(mixup=1.0)
    with pytest.raises(ValueError, match="takes"):
        load_config_file(f"{ROOT}/configs/atst_tiny.py:patch")


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def augment(x, n, draws, bins, stack, groups, aug):
    return atst.augment_logmel(x, n, draws, bins, stack, groups, aug)


def _logmel(rows=4, frames=12, bins=8, stack=2, lengths=(12, 12, 7, 10), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, frames, stack * bins)).astype(np.float32)
    n = np.asarray(lengths, np.int32)
    x[np.arange(frames)[None, :] >= n[:, None]] = 0.0
    return jnp.asarray(x), jnp.asarray(n)


def test_identity_draws_leave_the_log_mel_as_it_is():
    aug = atst.ViewAugment(mixup=0.4, freq_scale=(0.6, 1.5), time_scale=(0.6, 1.5), time_canvas=1.5)
    x, n = _logmel()
    draws = atst.draw_augment(jax.random.key(0), jnp.zeros((4,), bool), aug)
    np.testing.assert_array_equal(np.asarray(augment(x, n, draws, 8, 2, 1, aug)), np.asarray(x))
    on = atst.draw_augment(jax.random.key(0), jnp.ones((4,), bool), aug)
    assert not np.allclose(np.asarray(augment(x, n, on, 8, 2, 1, aug)), np.asarray(x))


def test_mixup_is_log_mixup_exp_with_the_next_valid_utterance():
    aug = atst.ViewAugment(mixup=0.4, freq_scale=(1.0, 1.0))
    x, n = _logmel()
    draws = atst.draw_augment(jax.random.key(1), jnp.ones((4,), bool), aug)
    y = np.asarray(augment(x, n, draws, 8, 2, 2, aug)).reshape(4, 24, 8)
    xs, a = np.asarray(x).reshape(4, 24, 8), np.asarray(draws["alpha"])
    assert (a > 0).all() and (a < 0.4).all()
    valid = np.arange(24)[None, :] < 2 * np.asarray(n)[:, None]
    for r, partner in zip(range(4), (1, 0, 3, 2)):  # two groups of two rows
        both = valid[r] & valid[partner]
        expect = np.log((1 - a[r]) * np.exp(xs[r]) + a[r] * np.exp(xs[partner]))
        np.testing.assert_allclose(y[r][both], expect[both], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y[r][valid[r] & ~valid[partner]], xs[r][valid[r] & ~valid[partner]])
        assert (y[r][~valid[r]] == 0).all()


def test_frequency_crop_resizes_a_band_onto_all_bands():
    aug = atst.ViewAugment(mixup=0.0, freq_scale=(0.5, 0.5))
    x, n = _logmel(bins=8, stack=1, lengths=(12, 12, 12, 12))
    draws = atst.draw_augment(jax.random.key(2), jnp.ones((4,), bool), aug)
    y = np.asarray(augment(x, n, draws, 8, 1, 1, aug))
    xs = np.asarray(x)
    for r in range(4):
        start = int(np.floor(float(draws["freq_pos"][r]) * 5))  # band of 4 of 8 bands, 5 places
        band = xs[r, :, start:start + 4]
        np.testing.assert_allclose(y[r, :, 0], band[:, 0], atol=1e-6)
        np.testing.assert_allclose(y[r, :, -1], band[:, -1], atol=1e-6)
        assert (y[r] >= band.min(1, keepdims=True) - 1e-6).all() and (y[r] <= band.max(1, keepdims=True) + 1e-6).all()


def test_time_crop_stays_inside_each_utterance_and_keeps_padding_zero():
    aug = atst.ViewAugment(mixup=0.0, freq_scale=(1.0, 1.0), time_scale=(0.6, 1.5), time_canvas=1.5)
    x, n = _logmel(bins=4, stack=1, lengths=(12, 5, 9, 1))
    draws = atst.draw_augment(jax.random.key(3), jnp.ones((4,), bool), aug)
    y = np.asarray(augment(x, n, draws, 4, 1, 1, aug))
    wide = jnp.pad(x, ((0, 0), (0, 6), (0, 0)))  # more padding changes nothing within the lengths
    y_wide = np.asarray(augment(wide, n, draws, 4, 1, 1, aug))
    np.testing.assert_allclose(y_wide[:, :12], y, atol=1e-6)
    assert (y_wide[:, 12:] == 0).all()
    xs = np.asarray(x)
    for r, length in enumerate(np.asarray(n)):
        assert (y[r, length:] == 0).all()
        lo = xs[r, :length].min()  # the canvas is filled with the utterance's lowest value
        assert (y[r, :length] >= lo - 1e-6).all() and (y[r, :length] <= xs[r, :length].max() + 1e-6).all()


def test_views_are_crops_of_the_valid_samples():
    obj = objectives.build(atst_config("clip"))
    b = batch_of(3, SAMPLES, lengths=[SAMPLES, 6000, 3000])
    wavs, mask = obj.views(jax.random.key(0), b["audio"], b["audio_mask"])
    wavs, mask, audio = np.asarray(wavs), np.asarray(mask), np.asarray(b["audio"])
    assert wavs.shape == (6, 4800)
    for r in range(6):
        u, length = r % 3, (SAMPLES, 6000, 3000)[r % 3]
        n = int(mask[r].sum())
        assert n == min(length, 4800) and mask[r, :n].all()
        hits = [s for s in range(length - n + 1) if np.array_equal(audio[u, s:s + n], wavs[r, :n])]
        assert hits, r
    assert not np.array_equal(wavs[0], wavs[3])  # two independent crops
    frame = objectives.build(atst_config("frame"))
    fw, fm = frame.views(jax.random.key(0), b["audio"], b["audio_mask"])
    np.testing.assert_array_equal(np.asarray(fw[:3]), np.asarray(b["audio"]))  # the whole crop, twice
    np.testing.assert_array_equal(np.asarray(fw[3:]), np.asarray(b["audio"]))
    np.testing.assert_array_equal(np.asarray(fm[3:]), np.asarray(b["audio_mask"]))


def test_teacher_follows_the_ema_schedule_exactly():
    obj, params, state = frame_objective()
    assert set(params) == {"encoder", "projector", "predictor"} and set(state["teacher"]) == {"encoder", "projector"}
    sched = obj.ema
    assert sched.shape == "cosine" and float(sched(0)) == pytest.approx(0.99) and float(sched(sched.steps)) == 1.0
    assert float(sched(sched.steps // 2)) == pytest.approx(0.995, abs=1e-6)
    moved = jax.tree.map(lambda p: 1.5 * p + 0.25, params)
    step = 123
    new = jax.jit(obj.update_state)(state, moved, step)
    d = float(sched(step))
    for k in ("encoder", "projector"):
        leaves = zip(*(jax.tree.leaves(tree[k]) for tree in (new["teacher"], moved, state["teacher"])))
        for t, s, t0 in leaves:
            np.testing.assert_allclose(np.asarray(t), d * np.asarray(t0) + (1 - d) * np.asarray(s), rtol=1e-6, atol=1e-6)


def test_loss_reads_masked_valid_tokens_ignores_padding_and_gives_the_teacher_no_gradient():
    obj, params, state = frame_objective()
    b = batch_of(3, SAMPLES, seed=4, lengths=[SAMPLES, 5600, SAMPLES])
    frames, short, wide = obj.num_frames(SAMPLES), obj.num_frames(5600), obj.num_frames(SAMPLES + 1600)
    mask = np.asarray(jax.random.bernoulli(jax.random.key(5), 0.5, (3, frames)))
    loss = lambda p, s, b: obj.loss(p, b, jax.random.key(6), 0, False, s)  # noqa: E731
    (value, m), (g, g_state) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        params, state, dict(b, mask_time_indices=mask))
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_state))  # the teacher is held constant
    assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g["predictor"]))
    valid = np.arange(frames)[None, :] < np.array([frames, short, frames])[:, None]
    assert float(m["masked_frames"]) == 2 * (mask & valid).sum()  # both views, never padding
    # Same views, augmentation draws, mask and valid tokens in a wider batch: the same loss.
    pad = {"audio": jnp.pad(b["audio"], ((0, 0), (0, 1600))),
           "audio_mask": jnp.pad(b["audio_mask"], ((0, 0), (0, 1600))),
           "mask_time_indices": np.pad(mask, ((0, 0), (0, wide - frames)))}
    value_pad, m_pad = jax.jit(loss)(params, state, pad)
    assert float(value_pad) == pytest.approx(float(value), rel=1e-4)
    assert float(m_pad["masked_frames"]) == float(m["masked_frames"])


@pytest.mark.parametrize("level", ["frame", "clip"])
def test_recipe_overfits_one_batch_without_collapse(level):
    obj = objectives.build(atst_config(level))
    b = batch_of(4, SAMPLES, seed=7, lengths=[SAMPLES, 7000, SAMPLES, 6000])
    _, _, hist = ema_helpers.train(obj, b, steps=30, lr=3e-3)
    first, last = hist[0], hist[-1]
    assert float(last["loss"]) < 0.5 * float(first["loss"]), (first["loss"], last["loss"])
    for h in hist:
        assert h["target_std"] > obj.floors["target_std"] and h["pred_std"] > obj.floors["pred_std"], h
    assert last["target_std"] > 0.5 * first["target_std"]  # the teacher's outputs keep their spread
    if level == "frame":
        assert 0.3 < float(last["masked_fraction"]) < 0.8


def test_upstream_embeds_the_encoder():
    from ssl_jax import Upstream

    c = atst_config()
    obj, params, _ = frame_objective()
    up = Upstream(params["encoder"], c.model)
    out = up.embed([np.asarray(tones(1, 12000, seed=8)[0]), np.asarray(tones(1, 16000, seed=9)[0])])
    assert [o.shape for o in out] == [(c.model.num_layers + 1, obj.num_frames(12000), 32),
                                      (c.model.num_layers + 1, obj.num_frames(16000), 32)]
    assert obj.num_frames(16000) == 24 and all(np.isfinite(o).all() for o in out)
    assert up.num_compiles == 1
