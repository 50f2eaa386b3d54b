"""BYOL-A's augmentations of log-mel spectrograms, as pure JAX functions inside the jitted step.

Niizumi et al., 2021 ("BYOL for Audio", Sec. 3.2) and 2023 (TASLP, Sec. 3.3): every view of a
segment is the segment mixed with a past input (mixup, in the linear-power domain:
log-mixup-exp), stretched and shifted in time and frequency (random resize crop of a virtual
canvas, resized back), and given a linear gain ramp over time (random linear fader, version 2
only). Inputs are log-mel [batch, frames, bins] (natural-log energies, standardised); every
draw is per item, from `jax.random` keys.

The mixup memory bank is a FIFO of past segments [bank_size, frames, bins], oldest first, with
`count` filled rows at its end; the objective keeps it in its non-gradient state and pushes each
batch's segments after the update (`bank_push`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax.config_fields import from_section


def random_crop(key: jax.Array, x: jax.Array, lengths: jax.Array, frames: int) -> jax.Array:
    """A random window of `frames` frames from each row's valid frames.

    x: [batch, total, bins] (0 beyond lengths); lengths: int[batch] valid frames.
    Returns [batch, frames, bins]: rows with fewer than `frames` valid frames start at 0 and
    keep 0 beyond their length (as the papers' zero-padded segments).
    """
    if frames < 1:
        raise ValueError(f"crop frames must be >= 1, got {frames}")
    if x.shape[1] < frames:
        x = jnp.pad(x, ((0, 0), (0, frames - x.shape[1]), (0, 0)))
    room = jnp.maximum(lengths - frames, 0) + 1
    start = jnp.floor(jax.random.uniform(key, lengths.shape) * room).astype(jnp.int32)
    start = jnp.minimum(start, room - 1)
    idx = start[:, None] + jnp.arange(frames)[None, :]
    out = jnp.take_along_axis(x, jnp.minimum(idx, x.shape[1] - 1)[..., None], axis=1)
    return jnp.where((idx < lengths[:, None])[..., None], out, 0.0)


def log_mixup_exp(x: jax.Array, z: jax.Array, alpha: jax.Array) -> jax.Array:
    """log((1 - alpha) exp(x) + alpha exp(z)): mixing in the power domain of log-mel inputs.

    x, z: [batch, frames, bins]; alpha: [batch] in [0, 1]. alpha = 0 returns x exactly.
    """
    a = alpha.astype(jnp.float32)[:, None, None]
    return jnp.logaddexp(jnp.log1p(-a) + x, jnp.log(a) + z)


def _uniforms(key: jax.Array | None, uniforms: jax.Array | None, shape: tuple[int, int]) -> jax.Array:
    """U(0, 1) [batch, k]: `uniforms` when given (drawn by the caller), else drawn from `key`.

    Each draw adds about half a second of compile time on a CPU, so `Augment` draws once for
    all its steps."""
    if uniforms is None:
        return jax.random.uniform(key, shape)
    if uniforms.shape != shape:
        raise ValueError(f"expected uniforms of shape {shape}, got {uniforms.shape}")
    return uniforms


def mixup(key: jax.Array | None, x: jax.Array, bank: jax.Array, count: jax.Array, ratio: float, *,
          uniforms: jax.Array | None = None) -> jax.Array:
    """Mixes every row with a random filled row of the bank, alpha ~ U(0, ratio) per row.

    x: [batch, frames, bins]; bank: [bank_size, frames, bins] with `count` (int scalar) filled
    rows at its end; uniforms: optional U(0, 1) [batch, 2] used instead of drawing from `key`.
    An empty bank or ratio 0 returns x unchanged.
    """
    if bank.shape[1:] != x.shape[1:]:
        raise ValueError(f"mixup bank rows {bank.shape[1:]} differ from the inputs' {x.shape[1:]}")
    size = bank.shape[0]
    count = jnp.asarray(count, jnp.int32)
    u = _uniforms(key, uniforms, (x.shape[0], 2))
    alpha = jnp.where(count > 0, ratio * u[:, 0], 0.0)
    pick = jnp.clip(jnp.floor(u[:, 1] * count).astype(jnp.int32), 0, jnp.maximum(count - 1, 0))
    z = bank[size - 1 - pick]
    return log_mixup_exp(x, z, alpha).astype(x.dtype)


def bank_push(bank: jax.Array, count: jax.Array, new: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The FIFO after appending `new` [n, frames, bins] (in order) and dropping the oldest rows.

    Returns (bank [bank_size, frames, bins], count int32: filled rows, at most bank_size).
    """
    if new.shape[1:] != bank.shape[1:]:
        raise ValueError(f"cannot push rows {new.shape[1:]} into a bank of rows {bank.shape[1:]}")
    size = bank.shape[0]
    new = new.astype(bank.dtype)
    bank = new[-size:] if new.shape[0] >= size else jnp.concatenate([bank[new.shape[0]:], new])
    return bank, jnp.minimum(jnp.asarray(count, jnp.int32) + new.shape[0], size)


def _check_scales(virtual_scale, freq_scale, time_scale) -> None:
    for name, (lo, hi) in (("freq_scale", freq_scale), ("time_scale", time_scale)):
        if not 0.0 < lo <= hi:
            raise ValueError(f"random resize crop: {name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
    if min(virtual_scale) < 1.0:
        raise ValueError(f"random resize crop: virtual_scale must be >= 1 on both axes, got {virtual_scale}")


def _resize_weights(start: jax.Array, size: jax.Array, n: int, offset: int) -> jax.Array:
    """Bilinear resampling weights [batch, n_out=n, n_in=n] of the canvas span [start, start + size)
    (align-corners) back to n points; canvas index c is input index c - offset, zero outside.

    start, size: int32[batch]. Positions are exact rationals (integer arithmetic), so a span of
    the input's own size and place gives exactly the identity.
    """
    span = jnp.arange(n, dtype=jnp.int32)[None, :] * (size[:, None] - 1)  # output p at start + span / (n - 1)
    div = max(n - 1, 1)
    low = start[:, None] + span // div - offset
    frac = ((span % div).astype(jnp.float32) / div)[..., None]
    return (1.0 - frac) * jax.nn.one_hot(low, n) + frac * jax.nn.one_hot(low + 1, n)


def random_resize_crop(key: jax.Array | None, x: jax.Array, virtual_scale: tuple[float, float] = (1.0, 1.5),
                       freq_scale: tuple[float, float] = (0.6, 1.5), time_scale: tuple[float, float] = (0.6, 1.5), *,
                       uniforms: jax.Array | None = None) -> jax.Array:
    """Random resize crop (BYOL-A): x is centred on a zero canvas `virtual_scale` (freq, time)
    times its size; a random area of (U(freq_scale) x bins, U(time_scale) x frames), clipped to
    the canvas, is resized back to [frames, bins] by bilinear interpolation (the reference uses
    bicubic). No canvas is built: each axis is one resampling matrix.

    x: [batch, frames, bins] -> [batch, frames, bins]; uniforms: optional U(0, 1) [batch, 4]
    used instead of drawing from `key`. Scales (1, 1) everywhere return x.
    """
    _check_scales(virtual_scale, freq_scale, time_scale)
    b, t, f = x.shape
    canvas_f, canvas_t = int(f * virtual_scale[0]), int(t * virtual_scale[1])
    u = _uniforms(key, uniforms, (b, 4))
    h = jnp.clip(jnp.floor((freq_scale[0] + (freq_scale[1] - freq_scale[0]) * u[:, 0]) * f), 1, canvas_f)
    w = jnp.clip(jnp.floor((time_scale[0] + (time_scale[1] - time_scale[0]) * u[:, 1]) * t), 1, canvas_t)
    i = jnp.minimum(jnp.floor(u[:, 2] * (canvas_f - h + 1)), canvas_f - h)
    j = jnp.minimum(jnp.floor(u[:, 3] * (canvas_t - w + 1)), canvas_t - w)
    h, w, i, j = (v.astype(jnp.int32) for v in (h, w, i, j))
    w_f = _resize_weights(i, h, f, (canvas_f - f) // 2)  # [batch, bins_out, bins_in]
    w_t = _resize_weights(j, w, t, (canvas_t - t) // 2)  # [batch, frames_out, frames_in]
    out = jnp.einsum("bst,btf,bgf->bsg", w_t, x.astype(jnp.float32), w_f, precision=jax.lax.Precision.HIGHEST)
    return out.astype(x.dtype)


def random_linear_fader(key: jax.Array | None, x: jax.Array, gain: float = 1.0, *,
                        uniforms: jax.Array | None = None) -> jax.Array:
    """Adds a linear ramp over time, from gain x U(-1, 1) at the first frame to gain x U(-1, 1)
    at the last, to every bin (a fade in or out in the log domain).

    x: [batch, frames, bins] -> [batch, frames, bins]; uniforms: optional U(0, 1) [batch, 2]
    used instead of drawing from `key`. Gain 0 returns x.
    """
    ends = gain * (2.0 * _uniforms(key, uniforms, (x.shape[0], 2)) - 1.0)
    pos = jnp.arange(x.shape[1], dtype=jnp.float32) / max(x.shape[1] - 1, 1)
    ramp = ends[:, :1] + (ends[:, 1:] - ends[:, :1]) * pos[None, :]
    return (x + ramp[..., None]).astype(x.dtype)


def normalize_batch(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """The papers' post-normalisation: one mean and std over the whole batch of views. [..] -> [..]."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean()
    return ((x32 - mean) * jax.lax.rsqrt(jnp.square(x32 - mean).mean() + eps)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class Augment:
    """One BYOL-A view: mixup -> random resize crop -> random linear fader (`fader_gain` 0: off,
    as version 1). Built from `objective.augment`.

    Attributes:
      mixup_ratio: alpha ~ U(0, mixup_ratio) (v1 0.4, v2 0.2).
      bank_size: rows of the mixup FIFO (v1 2048, v2 512).
      virtual_scale, freq_scale, time_scale: random resize crop ((1.0, 1.5), (0.6, 1.5), (0.6, 1.5)).
      fader_gain: random linear fader's gain (v2 1.0).
    """

    mixup_ratio: float = 0.2
    bank_size: int = 512
    virtual_scale: tuple[float, float] = (1.0, 1.5)
    freq_scale: tuple[float, float] = (0.6, 1.5)
    time_scale: tuple[float, float] = (0.6, 1.5)
    fader_gain: float = 1.0

    def __post_init__(self):
        for name in ("virtual_scale", "freq_scale", "time_scale"):
            v = tuple(float(s) for s in getattr(self, name))
            if len(v) != 2:
                raise ValueError(f"objective.augment.{name} must be a pair, got {v}")
            object.__setattr__(self, name, v)
        if not 0.0 <= self.mixup_ratio <= 1.0:
            raise ValueError(f"objective.augment.mixup_ratio must lie in [0, 1], got {self.mixup_ratio}")
        if self.bank_size < 1:
            raise ValueError(f"objective.augment.bank_size must be >= 1, got {self.bank_size}")
        if self.fader_gain < 0.0:
            raise ValueError(f"objective.augment.fader_gain must be >= 0, got {self.fader_gain}")
        _check_scales(self.virtual_scale, self.freq_scale, self.time_scale)

    @classmethod
    def from_config(cls, cfg: Any) -> "Augment":
        """From a ConfigDict or mapping; unknown keys are an error naming the valid ones."""
        return from_section(cls, cfg, "objective.augment")

    def __call__(self, key: jax.Array, x: jax.Array, bank: jax.Array, count: jax.Array) -> jax.Array:
        """One augmented view of x [batch, frames, bins] (bank and count as `mixup`)."""
        u = jax.random.uniform(key, (x.shape[0], 8))  # one draw for the three steps
        x = mixup(None, x, bank, count, self.mixup_ratio, uniforms=u[:, :2])
        x = random_resize_crop(None, x, self.virtual_scale, self.freq_scale, self.time_scale, uniforms=u[:, 2:6])
        return random_linear_fader(None, x, self.fader_gain, uniforms=u[:, 6:])
