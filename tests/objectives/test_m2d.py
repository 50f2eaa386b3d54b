"""Tests for ssl_jax/objectives/m2d.py: the patch split, what each network sees, the EMA
teacher, overfitting without collapse, and Upstream on the trained encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.objectives.m2d import split_patches
from ssl_jax.training.config_check import load_config_file
from tests.objectives import ema_helpers
from tests.helpers import ROOT, tones


def m2d_config(**objective):
    c = load_config_file(f"{ROOT}/configs/m2d_tiny.py")
    c.model.update(patch_freq=16, patch_time=4, dim=32, num_layers=1, num_heads=2, intermediate_size=64)
    c.objective.predictor.update(dim=16, num_layers=1, num_heads=2, intermediate_size=32)
    c.objective.update(**objective)
    return c


def batch_of(x, lengths):
    return {"audio": jnp.asarray(x), "audio_mask": jnp.asarray(np.arange(x.shape[1])[None] < np.asarray(lengths)[:, None])}


@pytest.fixture(scope="module")
def setup():
    """(objective, batch, params, state) shared by the tests: one batch shape, one compile of each op."""
    obj = objectives.build(m2d_config())
    batch = batch_of(tones(4, 8000, seed=4), [8000, 8000, 7000, 6000])
    params, state = ema_helpers.start(obj, batch)
    return obj, batch, params, state


@pytest.fixture(scope="module")
def eval_loss(setup):
    """Jitted (eval loss and metrics, gradient with respect to the objective state) of a batch."""
    obj, _, params, _ = setup
    f = lambda s, b: obj.loss(params, b, jax.random.key(5), 10**9, False, s)
    return jax.jit(jax.value_and_grad(f, has_aux=True))


def test_split_covers_the_valid_patches_once():
    valid = jnp.asarray([60, 35, 1, 0])
    s = jax.tree.map(np.asarray, split_patches(jax.random.key(3), valid, 60, 0.7))
    assert s["visible_index"].shape == (4, 18) and s["masked_index"].shape == (4, 42)
    for b, n in enumerate([60, 35, 1, 0]):
        vis = s["visible_index"][b][s["visible_valid"][b]]
        msk = s["masked_index"][b][s["masked_valid"][b]]
        assert len(vis) == (max(1, int(n * 0.3 + 1e-4)) if n else 0)
        assert sorted(np.concatenate([vis, msk]).tolist()) == list(range(n))  # disjoint, valid only
    other = np.asarray(split_patches(jax.random.key(4), valid, 60, 0.7)["visible_index"])
    assert not np.array_equal(np.sort(other[0]), np.sort(s["visible_index"][0]))


def test_online_side_sees_only_visible_and_target_only_masked_patches(setup):
    obj, batch, params, state = setup
    state = dict(state, teacher={"encoder": jax.tree.map(lambda t: t * 1.1, state["teacher"]["encoder"])})
    patches, valid = obj.patches(batch)
    split = split_patches(jax.random.key(0), valid, patches.shape[1], obj.mask_ratio)
    forward = jax.jit(obj.forward)
    pred, target = forward(params, state, patches, split)
    assert pred.shape == target.shape == (4, patches.shape[1] - split["visible_index"].shape[1], 32)

    def only(index, ok):
        sel = np.zeros(patches.shape[:2], bool)
        for b in range(4):
            sel[b, np.asarray(index[b])[np.asarray(ok[b])]] = True
        return jnp.asarray(sel)[..., None]

    vis, msk = only(split["visible_index"], split["visible_valid"]), only(split["masked_index"], split["masked_valid"])
    w = np.asarray(split["masked_valid"])
    new_masked = forward(params, state, jnp.where(msk, patches + 3.0, patches), split)
    new_visible = forward(params, state, jnp.where(vis, patches + 3.0, patches), split)
    np.testing.assert_allclose(np.asarray(new_masked[0])[w], np.asarray(pred)[w], atol=1e-5)  # online: blind to masked
    np.testing.assert_allclose(np.asarray(new_visible[1])[w], np.asarray(target)[w], atol=1e-5)  # target: blind to visible
    assert np.abs(np.asarray(new_visible[0] - pred)[w]).max() > 1e-3  # ... but not to their own inputs
    assert np.abs(np.asarray(new_masked[1] - target)[w]).max() > 1e-3


def test_teacher_gets_no_gradient_and_follows_the_schedule(setup, eval_loss):
    obj, batch, params, state = setup
    assert (obj.ema.start, obj.ema.end, obj.ema.steps, obj.ema.shape) == (0.98, 0.996, 800, "linear")
    np.testing.assert_allclose([float(obj.ema(s)) for s in (0, 400, 800, 5000)], [0.98, 0.988, 0.996, 0.996], rtol=1e-6)
    # The loss reads the teacher but sends it no gradient (the optimizer never sees it either:
    # it lives in the objective state); the online parameters' gradient shows in the overfit test.
    _, g_state = eval_loss(state, batch)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_state))
    moved = jax.tree.map(lambda p: p + 1.0, params)
    new = obj.update_state(state, moved, 400)
    d = float(obj.ema(400))
    for t, s, n in zip(jax.tree.leaves(state["teacher"]["encoder"]), jax.tree.leaves(moved["encoder"]),
                       jax.tree.leaves(new["teacher"]["encoder"])):
        np.testing.assert_allclose(np.asarray(n), d * np.asarray(t) + (1 - d) * np.asarray(s), rtol=1e-6, atol=1e-6)


def test_eval_loss_is_deterministic_and_padding_free(setup, eval_loss):
    obj, batch, params, state = setup
    a, _ = eval_loss(state, batch)
    b, _ = eval_loss(state, dict(batch, audio=batch["audio"].at[3, 6000:].set(4.0)))
    np.testing.assert_allclose(float(a[0]), float(b[0]), rtol=1e-5)
    counts = [int(obj.model.frame_lengths(np.array([n]))[0]) * obj.model.freq_patches for n in (8000, 8000, 7000, 6000)]
    assert float(a[1]["masked_frames"]) == sum(n - int(n * 0.4 + 1e-4) for n in counts)
    assert float(a[1]["ema_decay"]) == pytest.approx(0.996)


def test_tiny_m2d_overfits_a_batch_without_collapse_and_embeds(setup):
    from ssl_jax.upstream import Upstream

    obj, batch, _, _ = setup
    params, _, hist = ema_helpers.train(obj, batch, steps=30, lr=3e-3)
    first, last = hist[0], hist[-1]
    assert float(last["loss"]) < 0.5 * float(first["loss"]), (first["loss"], last["loss"])
    for key in ("target_std", "pred_std"):
        assert float(last[key]) > obj.floors[key], (key, last[key])
    up = Upstream(params["encoder"], obj.config.model, min_samples=8000)
    feats = up.embed([np.asarray(batch["audio"][3, :6000])], batch_size=1)[0]
    assert feats.shape == (2, int(obj.model.frame_lengths(np.array([6000]))[0]), 5 * 32) and np.isfinite(feats).all()


def test_needs_the_patch_encoder_and_a_valid_ratio():
    c = load_config_file(f"{ROOT}/configs/m2d_tiny.py")
    c.model = load_config_file(f"{ROOT}/configs/w2v2_tiny.py").model
    with pytest.raises(ValueError, match="architecture='patches'"):
        objectives.build(c)
    with pytest.raises(ValueError, match="mask_ratio"):
        objectives.build(m2d_config(mask_ratio=1.0))
