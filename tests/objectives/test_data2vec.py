"""Tests for the EMA machinery (ssl_jax/objectives/ema.py), data2vec and data2vec 2.0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.objectives import ema, masking
from tests.objectives import ema_helpers
from tests.helpers import d2v_config, tones


def _batch(num=2, samples=16000, seed=2):
    return {"audio": jnp.asarray(tones(num, samples, seed=seed)), "audio_mask": jnp.ones((num, samples), bool)}


def test_schedule_is_linear_or_cosine_then_constant():
    lin = ema.EmaSchedule(0.9, 0.99, 100)
    np.testing.assert_allclose([float(lin(s)) for s in (0, 50, 100, 500)], [0.9, 0.945, 0.99, 0.99], rtol=1e-6)
    cos = ema.EmaSchedule(0.9, 0.99, 100, "cosine")
    np.testing.assert_allclose([float(cos(s)) for s in (0, 50, 100)], [0.9, 0.945, 0.99], rtol=1e-6)
    assert float(cos(25)) < float(lin(25))
    with pytest.raises(ValueError, match="shape"):
        ema.EmaSchedule(0.9, 0.99, 10, "step")


def test_instance_norm_targets_average_the_top_layers_and_ignore_padding():
    rng = np.random.default_rng(0)
    layers = [jnp.asarray(rng.normal(i, 1 + i, (2, 7, 3)), jnp.float32) for i in range(3)]
    mask = jnp.asarray(np.arange(7)[None] < np.array([[7], [5]]))
    y = np.asarray(ema.layer_targets(layers, mask, top_k=2))
    want = sum(np.asarray(ema.instance_norm(h, mask)) for h in layers[1:]) / 2
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    z = np.asarray(ema.instance_norm(layers[2], mask))
    np.testing.assert_allclose(z[1, :5].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[1, :5].std(0), 1.0, rtol=1e-3)
    assert np.all(z[1, 5:] == 0.0)
    changed = [h.at[1, 5:].set(100.0) for h in layers]  # padding frames do not move the targets
    np.testing.assert_allclose(np.asarray(ema.layer_targets(changed, mask, top_k=2)), y, rtol=1e-5, atol=1e-6)


def test_spread_sees_collapse():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 10, 8)), jnp.float32)
    s = ema.spread(x, jnp.ones((4, 10), bool))
    assert 0.8 < float(s["target_std"]) < 1.2 and 0.8 < float(s["target_std_time"]) < 1.2
    same = ema.spread(jnp.broadcast_to(x[:1, :1], x.shape), None, "pred")
    assert float(same["pred_std"]) < 0.01 and float(same["pred_std_batch"]) < 0.01


def test_teacher_gets_no_gradient_and_follows_the_schedule_exactly():
    obj = objectives.build(d2v_config())
    batch = _batch()
    params, state = ema_helpers.start(obj, batch)
    jax.tree.map(np.testing.assert_array_equal, state["teacher"]["encoder"], params["encoder"])
    grad_teacher = jax.jit(jax.grad(lambda s: obj.loss(params, batch, jax.random.key(0), 0, True, s)[0]))(state)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad_teacher))
    moved = jax.tree.map(lambda p: p + 1.0, params)
    new = obj.update_state(state, moved, 7)
    d = float(obj.ema(7))
    assert d == pytest.approx(0.99 + (0.999 - 0.99) * 7 / 400)
    jax.tree.map(lambda t, t0, p: np.testing.assert_allclose(t, d * t0 + (1 - d) * p, rtol=1e-6, atol=1e-7),
                 new["teacher"]["encoder"], state["teacher"]["encoder"], moved["encoder"])


@pytest.mark.parametrize("name", ["data2vec", "data2vec2"])
def test_tiny_recipe_overfits_one_batch_without_collapse(name):
    obj = objectives.build(d2v_config(name))
    batch = _batch()
    copies = getattr(obj, "num_masks", 1)
    t = obj.num_frames(batch["audio"].shape[1])
    mask = np.random.default_rng(0).random((2 * copies, t)) < 0.5  # one fixed mask per copy
    _, _, h = ema_helpers.train(obj, dict(batch, mask_time_indices=jnp.asarray(mask)), 60, lr=3e-3)
    first = np.mean([m["loss"] for m in h[:3]])
    last = np.mean([m["loss"] for m in h[-3:]])
    assert last < 0.6 * first, (first, last)
    for m in h[-5:]:
        assert m["target_std"] > obj.floors["target_std"] and m["pred_std"] > obj.floors["pred_std"], m


def test_inverse_block_mask_keeps_blocks_and_the_same_fraction():
    lengths = jnp.asarray([100, 60, 0])
    mask, keep = masking.inverse_block_mask(jax.random.key(3), lengths, 100, mask_prob=0.6, block=5)
    mask, keep = np.asarray(mask), np.asarray(keep)
    assert keep.shape == (3, masking.num_kept(100, 0.6))
    valid = np.arange(100)[None] < np.asarray(lengths)[:, None]
    visible = valid & ~mask
    assert not mask[~valid].any()
    np.testing.assert_array_equal(visible.sum(1), [40, 24, 0])
    for r in range(3):
        assert set(np.flatnonzero(visible[r])) <= set(keep[r]) and np.all(np.diff(keep[r]) > 0)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, visible[0].astype(int), 0])))[::2]  # visible run lengths
    assert runs.mean() >= 3.0, runs


def test_data2vec2_student_never_sees_masked_frames():
    obj = objectives.build(d2v_config("data2vec2"))
    batch = _batch(1, 8000)
    params, _ = ema_helpers.start(obj, batch)
    t = obj.num_frames(8000)
    mask = jnp.asarray((np.arange(t) // 4) % 2 == 1)[None]  # alternate blocks of 4 frames
    _, keep = obj.draw_masks(dict(batch, mask_time_indices=jnp.repeat(mask, obj.num_masks, 0)), None)

    def student(audio):
        (_, out, _), _ = obj.module.apply({"params": params}, audio, batch["audio_mask"], mask, keep[:1],
                                          deterministic=True, mutable=["intermediates"])
        return np.asarray(jnp.where(out.frame_mask[..., None], out.last_hidden_state, 0.0))

    def perturb(frames):  # samples only frame j's window reads: [320 j + 240, 320 j + 320) for the log-mel front end
        audio = np.array(batch["audio"])
        for j in frames:
            audio[0, 320 * j + 240 : 320 * j + 320] += 3.0
        return jnp.asarray(audio)

    base = student(batch["audio"])
    masked_frames = np.flatnonzero(np.asarray(mask[0]))
    np.testing.assert_array_equal(student(perturb(masked_frames)), base)
    assert np.abs(student(perturb([0, 1])) - base).max() > 1e-3  # visible frames do reach it
