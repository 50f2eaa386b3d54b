"""Tests for ssl_jax/data/spec_augment.py: BYOL-A's augmentations and the mixup memory bank."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.data import spec_augment as sa


def _spec(batch=3, frames=20, bins=8, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, frames, bins)).astype(np.float32))


def test_mixup_with_ratio_zero_or_an_empty_bank_is_the_identity():
    x = _spec()
    bank = _spec(batch=4, seed=1)
    np.testing.assert_array_equal(sa.mixup(jax.random.key(0), x, bank, 4, 0.0), x)
    np.testing.assert_array_equal(sa.mixup(jax.random.key(0), x, bank, 0, 0.4), x)


def test_mixup_adds_a_filled_bank_row_in_the_power_domain():
    x = _spec()
    bank = jnp.full((4, 20, 8), jnp.nan).at[-1].set(0.5)  # one filled row (the newest); the rest must not be read
    out = np.asarray(sa.mixup(jax.random.key(3), x, bank, 1, 0.4))
    assert np.isfinite(out).all()
    # exp(out) = (1 - a) exp(x) + a exp(z): one a per row, in [0, 0.4], the same at every frame and bin.
    a = (np.exp(out) - np.exp(np.asarray(x))) / (np.exp(0.5) - np.exp(np.asarray(x)))
    for row in a:
        np.testing.assert_allclose(row, row.mean(), atol=2e-4)
        assert 0.0 <= row.mean() <= 0.4
    assert np.ptp(a.mean((1, 2))) > 1e-3  # alpha is drawn per row


def test_bank_is_a_fifo_of_the_newest_rows():
    row = lambda v: jnp.full((1, 2, 3), float(v))  # noqa: E731
    bank, count = jnp.zeros((5, 2, 3)), jnp.zeros((), jnp.int32)
    bank, count = sa.bank_push(bank, count, jnp.concatenate([row(1), row(2)]))
    assert int(count) == 2 and np.asarray(bank)[:, 0, 0].tolist() == [0, 0, 0, 1, 2]
    bank, count = sa.bank_push(bank, count, jnp.concatenate([row(3), row(4), row(5)]))
    bank, count = sa.bank_push(bank, count, jnp.concatenate([row(6), row(7)]))
    assert int(count) == 5 and np.asarray(bank)[:, 0, 0].tolist() == [3, 4, 5, 6, 7]
    bank, count = sa.bank_push(bank, count, jnp.concatenate([row(v) for v in range(8, 15)]))
    assert int(count) == 5 and np.asarray(bank)[:, 0, 0].tolist() == [10, 11, 12, 13, 14]
    with pytest.raises(ValueError, match="bank"):
        sa.bank_push(bank, count, jnp.zeros((1, 3, 3)))


def test_random_resize_crop_of_the_full_input_is_the_identity():
    x = _spec()
    out = sa.random_resize_crop(jax.random.key(0), x, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0))
    np.testing.assert_array_equal(out, x)


def test_random_resize_crop_at_scale_one_shifts_within_the_virtual_canvas():
    x = np.asarray(_spec(batch=6, frames=20))
    out = np.asarray(sa.random_resize_crop(jax.random.key(1), jnp.asarray(x), (1.0, 1.5), (1.0, 1.0), (1.0, 1.0)))
    shifts = []
    for xi, oi in zip(x, out):
        padded = np.pad(xi, ((5, 5), (0, 0)))
        found = [s for s in range(-5, 6) if np.allclose(oi, padded[5 + s : 25 + s], atol=1e-6)]
        assert found, "no integer time shift with zero fill explains the output"
        shifts.append(found[0])
    assert len(set(shifts)) > 1


def test_random_resize_crop_keeps_linear_ramps_linear():
    t, f = np.meshgrid(np.arange(24.0), np.arange(10.0), indexing="ij")
    x = jnp.asarray(np.stack([0.3 * t - 0.7 * f + 1.0] * 4).astype(np.float32))
    # a crop area inside the input (no virtual margin, scales <= 1)
    out = np.asarray(sa.random_resize_crop(jax.random.key(2), x, (1.0, 1.0), (0.5, 1.0), (0.5, 1.0)))
    assert out.shape == x.shape
    np.testing.assert_allclose(np.diff(out, 2, axis=1), 0.0, atol=1e-4)  # bilinear resampling of an affine map
    np.testing.assert_allclose(np.diff(out, 2, axis=2), 0.0, atol=1e-4)
    assert not np.allclose(out, np.asarray(x))
    with pytest.raises(ValueError, match="time_scale"):
        sa.random_resize_crop(jax.random.key(0), x, (1.0, 1.5), (0.6, 1.5), (1.5, 0.6))


def test_linear_fader_adds_one_ramp_over_time_to_every_bin():
    x = _spec(batch=5)
    out = np.asarray(sa.random_linear_fader(jax.random.key(0), x, gain=1.0))
    assert out.shape == x.shape
    d = out - np.asarray(x)
    np.testing.assert_allclose(d, d[:, :, :1].repeat(8, 2), atol=1e-6)  # the same for every bin
    np.testing.assert_allclose(np.diff(d[:, :, 0], 2, axis=1), 0.0, atol=1e-5)  # linear in time
    assert np.abs(d).max() <= 1.0 and np.ptp(d[:, 0, 0]) > 0.05  # ends in [-gain, gain], drawn per item
    np.testing.assert_array_equal(sa.random_linear_fader(jax.random.key(0), x, gain=0.0), x)


def test_random_crop_takes_a_window_of_valid_frames_and_pads_short_rows():
    frames = np.arange(1.0, 31.0, dtype=np.float32)  # frame t holds t + 1 (0 = padding)
    x = np.repeat(frames[None, :, None], 4, 0).repeat(2, 2)
    lengths = np.array([30, 20, 12, 5])
    x[np.arange(30)[None, :] >= lengths[:, None]] = 0.0
    out = np.asarray(sa.random_crop(jax.random.key(0), jnp.asarray(x), jnp.asarray(lengths), 12))
    assert out.shape == (4, 12, 2)
    for row, n in zip(out[:, :, 0], lengths):
        if n >= 12:
            assert np.all(np.diff(row) == 1) and row[-1] <= n  # contiguous, inside the valid frames
        else:
            np.testing.assert_array_equal(row, np.where(np.arange(12) < n, np.arange(1, 13), 0))
    crop = jax.jit(lambda k: sa.random_crop(k, jnp.asarray(x), jnp.asarray(lengths), 12))
    starts = {int(crop(jax.random.key(k))[0, 0, 0]) for k in range(8)}
    assert len(starts) > 2


def test_normalize_batch_and_augment_config():
    y = np.asarray(sa.normalize_batch(_spec() * 3.0 + 2.0))
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1.0) < 1e-3
    aug = sa.Augment.from_config({"mixup_ratio": 0.2, "bank_size": 4})
    x = _spec(frames=20)
    v1 = aug(jax.random.key(0), x, _spec(batch=4, seed=2), jnp.asarray(4))
    v2 = aug(jax.random.key(1), x, _spec(batch=4, seed=2), jnp.asarray(4))
    assert v1.shape == x.shape and np.isfinite(np.asarray(v1)).all() and not np.allclose(v1, v2)
    with pytest.raises(ValueError, match="valid keys"):
        sa.Augment.from_config({"mixup_raito": 0.2})
    with pytest.raises(ValueError, match="virtual_scale"):
        sa.Augment(virtual_scale=(0.5, 1.0))
