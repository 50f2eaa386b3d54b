"""What the masked-reconstruction objectives share (Mockingjay: objectives/mockingjay.py; TERA:
objectives/tera.py; DeCoAR 2.0: objectives/decoar2.py): the alterations of log-mel frames, the
prediction head and the L1 loss over the altered entries.

The frame encoder (`model.architecture = "frames"`, log-mel front end with per-utterance CMVN)
reads altered frames and a prediction head (Dense -> GELU -> LayerNorm -> Dense to the frame
width, Mockingjay's and TERA's) reconstructs the originals; the L1 loss is the mean absolute
error over the altered (frame, bin) entries of valid frames only.

Alterations of Mockingjay (Liu et al., 2020) and TERA (Liu, Li & Lee, 2021), in this order, each
drawn per utterance from the step key, padding never touched:
  time       spans of `mask_length` frames start at random valid frames (`masking.span_starts`:
             about mask_prob x L / mask_length spans, which may overlap, so a little under
             `mask_prob` of the L valid frames); a span is zeroed with probability `zero_prob`,
             replaced by the frames of a span at a random place of the same (unaltered)
             utterance with probability `random_prob`, and left as it is otherwise (BERT's
             80/10/10, drawn per span; where spans overlap, the later one decides)
  frequency  a band of w ~ U{0, ..., floor(freq_mask_fraction x bins)} consecutive mel bins
             at a uniform place, zeroed on every valid frame (in every stacked slot alike)
  magnitude  with probability `noise_prob`, N(0, noise_std^2) noise added to the valid frames
The loss counts the time-chosen frames (all their bins, the unchanged ones too) and the
frequency-masked bins; noise alone makes no entry count, as in the authors' implementation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import frame_encoder
from ssl_jax.models.encoder import config_from
from ssl_jax.models.feature_extractor import LN_EPS, gelu
from ssl_jax.objectives import Objective, masking
from ssl_jax.objectives.ema import floors_from_config, spread

# What the time alteration did to a frame (`TimeAlteration.action`).
UNTOUCHED, ZEROED, RANDOM, KEPT = 0, 1, 2, 3


class TimeAlteration(NamedTuple):
    """x: [batch, frames, dim] altered frames; chosen: bool[batch, frames] frames of a span;
    action: int32[batch, frames] UNTOUCHED, ZEROED, RANDOM or KEPT."""

    x: jax.Array
    chosen: jax.Array
    action: jax.Array


def span_origins(starts: jax.Array, span: int) -> jax.Array:
    """For each frame, the latest span start s with s <= t < s + span, else -1.

    starts: bool[batch, frames] -> int32[batch, frames].
    """
    t = jnp.arange(starts.shape[1], dtype=jnp.int32)
    last = jax.lax.cummax(jnp.where(starts, t[None, :], -1), axis=1)
    return jnp.where((last >= 0) & (t[None, :] - last < span), last, -1)


def alter_time(key: jax.Array, x: jax.Array, frame_mask: jax.Array, *, mask_prob: float, mask_length: int,
               min_masks: int = 0, zero_prob: float = 0.8, random_prob: float = 0.1) -> TimeAlteration:
    """Mockingjay's / TERA's time alteration (module docstring).

    Args:
      key: PRNG key.
      x: [batch, frames, dim] front-end frames (0 on padding).
      frame_mask: bool[batch, frames], valid frames (a prefix of each row).
      mask_prob, mask_length, min_masks: span settings of `masking.span_starts`.
      zero_prob, random_prob: the share of spans zeroed and of spans replaced by other frames;
        the rest are kept.
    Returns:
      `TimeAlteration`; padding frames are never chosen nor changed.
    """
    batch, frames = frame_mask.shape
    lengths = frame_mask.sum(-1).astype(jnp.int32)
    k_start, k_action, k_source = jax.random.split(key, 3)
    starts = masking.span_starts(k_start, lengths, frames, mask_prob=mask_prob, mask_length=mask_length,
                                 min_masks=min_masks)
    origin = span_origins(starts, mask_length)
    chosen = (origin >= 0) & frame_mask
    at = jnp.maximum(origin, 0)
    # One draw per start position; a frame reads the draws of the span that covers it.
    u = jnp.take_along_axis(jax.random.uniform(k_action, (batch, frames)), at, axis=1)
    action = jnp.where(u < zero_prob, ZEROED, jnp.where(u < zero_prob + random_prob, RANDOM, KEPT))
    action = jnp.where(chosen, action, UNTOUCHED).astype(jnp.int32)
    source_start = jax.random.randint(k_source, (batch, frames), 0, jnp.maximum(lengths - mask_length + 1, 1)[:, None])
    t = jnp.arange(frames, dtype=jnp.int32)[None, :]
    source = jnp.take_along_axis(source_start, at, axis=1) + (t - at)
    source = jnp.clip(source, 0, jnp.maximum(lengths - 1, 0)[:, None])
    copied = jnp.take_along_axis(x, source[..., None], axis=1)
    out = jnp.where((action == ZEROED)[..., None], 0.0, jnp.where((action == RANDOM)[..., None], copied, x))
    return TimeAlteration(out.astype(x.dtype), chosen, action)


def frequency_band(key: jax.Array, batch: int, bins: int, stack: int, max_fraction: float) -> jax.Array:
    """TERA's frequency alteration: per utterance a band of w ~ U{0, ..., floor(max_fraction *
    bins)} consecutive bins at a uniform place.

    Returns:
      bool[batch, stack * bins]: the band, repeated in every stacked slot of a frame (the
      log-mel front end lays a stacked frame out as [stack, bins]).
    """
    k_width, k_start = jax.random.split(key)
    width = jax.random.randint(k_width, (batch,), 0, int(max_fraction * bins) + 1)
    start = jax.random.randint(k_start, (batch,), 0, bins - width + 1)
    f = jnp.arange(bins)[None, :]
    band = (f >= start[:, None]) & (f < (start + width)[:, None])
    return jnp.tile(band, (1, stack))


def add_noise(key: jax.Array, x: jax.Array, frame_mask: jax.Array, *, prob: float,
              std: float) -> tuple[jax.Array, jax.Array]:
    """TERA's magnitude alteration: with probability `prob` per utterance, N(0, std^2) noise on
    its valid frames. x: [batch, frames, dim] -> (x, noisy bool[batch])."""
    k_pick, k_noise = jax.random.split(key)
    noisy = jax.random.uniform(k_pick, (x.shape[0],)) < prob
    noise = std * jax.random.normal(k_noise, x.shape, jnp.float32)
    return jnp.where((noisy[:, None] & frame_mask)[..., None], x + noise.astype(x.dtype), x), noisy


def masked_l1(pred: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
    """Mean |pred - target| over the entries where `weight` is True.

    pred, target: [batch, frames, dim]; weight: bool[batch, frames, dim] -> scalar (0 when none).
    """
    w = weight.astype(jnp.float32)
    err = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
    return (err * w).sum() / jnp.maximum(w.sum(), 1.0)


_init = nn.with_logical_partitioning


class PredictionHead(nn.Module):
    """Dense -> GELU -> LayerNorm -> Dense: hidden states [batch, frames, hidden] -> [batch, frames, out].

    Attributes: out (the frame width); dtype.
    """

    out: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        hidden = h.shape[-1]
        h = nn.Dense(hidden, dtype=self.dtype, kernel_init=_init(nn.initializers.lecun_normal(), ("embed", "mlp")),
                     bias_init=_init(nn.initializers.zeros, ("mlp",)), name="dense")(h)
        h = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, scale_init=_init(nn.initializers.ones, ("mlp",)),
                         bias_init=_init(nn.initializers.zeros, ("mlp",)), name="norm")(gelu(h))
        return nn.Dense(self.out, dtype=self.dtype,
                        kernel_init=_init(nn.initializers.lecun_normal(), ("mlp", "conv_channels")),
                        bias_init=_init(nn.initializers.zeros, ("conv_channels",)), name="out")(h)


class Reconstruction(NamedTuple):
    """pred, target: [batch, frames, dim]; weight: bool[batch, frames, dim], the entries the L1
    counts; frame_mask: bool[batch, frames]; chosen: bool[batch, frames], the frames the
    alteration picked in time."""

    pred: jax.Array
    target: jax.Array
    weight: jax.Array
    frame_mask: jax.Array
    chosen: jax.Array


class MaskedReconstruction(Objective):
    """Base of the reconstruction objectives: the frame encoder with a log-mel front end and the
    prediction head. A subclass implements `alter` and may add parameters (`extra_params`) and
    change what the head reads (`decode`).

    Params: `{"encoder", "head", ...}`. Batch: `audio` [batch, samples], `audio_mask`.
    """

    SUMMARY = {"l1": "L1 reconstruction", "pred_std": "prediction spread"}

    def __init__(self, config: Any):
        self.config = config
        self.encoder_config = config_from(config["model"])
        name = config["objective"]["name"]
        if not isinstance(self.encoder_config, frame_encoder.Config) or self.encoder_config.frontend != "logmel":
            raise ValueError(f"{name} reconstructs log-mel frames: set model.architecture='frames' and "
                             f"model.frontend='logmel'")
        if self.encoder_config.vq_layer >= 0:
            raise ValueError(f"{name} takes no model.vq_layer (set -1)")
        self.encoder = frame_encoder.Encoder(self.encoder_config)
        self.dtype = jnp.dtype(self.encoder_config.dtype)
        self.head = PredictionHead(self.encoder_config.feature_dim, self.dtype)
        # Collapse: every prediction the same frame (the spread of CMVN frames is about 1).
        self.floors = floors_from_config(config["objective"])

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Boxed parameters (the log-mel front end has none, so they do not depend on the batch)."""
        del batch
        k_enc, k_head, k_extra = jax.random.split(rng, 3)
        x = jnp.zeros((1, 4, self.encoder_config.feature_dim), jnp.float32)
        enc = self.encoder.init({"params": k_enc}, x, jnp.ones((1, 4), bool), method="body")["params"]
        h = jnp.zeros((1, 1, self.encoder_config.hidden_size), jnp.float32)
        return {"encoder": enc, "head": self.head.init(k_head, h)["params"], **self.extra_params(k_extra)}

    def extra_params(self, rng: jax.Array) -> dict:
        """Parameters beside the encoder and the head (boxed); none by default."""
        del rng
        return {}

    def alter(self, params: Any, x: jax.Array, frame_mask: jax.Array,
              rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, dict]:
        """(altered x [batch, frames, dim], the loss entries bool[batch, frames, dim], the frames
        picked in time bool[batch, frames], metrics)."""
        raise NotImplementedError

    def decode(self, params: Any, out: Any, chosen: jax.Array, rng: jax.Array, step: Any,
               train: bool) -> tuple[jax.Array, jax.Array, dict]:
        """(prediction [batch, frames, dim], an added loss term, metrics) from the `EncoderOutput`."""
        del chosen, rng, step, train
        return self.head.apply({"params": params["head"]}, out.last_hidden_state), jnp.zeros((), jnp.float32), {}

    def reconstruct(self, params: Any, batch: dict, rng: jax.Array, step: Any = 0,
                    train: bool = True) -> tuple[Reconstruction, jax.Array, dict]:
        """Alters the batch's frames, encodes them and predicts the originals.

        Returns:
          (`Reconstruction`, the added loss term, metrics of the alteration and the decoder).
        """
        k_alter, k_drop, k_decode = jax.random.split(rng, 3)
        x, frame_mask, _ = self.encoder.apply({"params": params["encoder"]}, batch["audio"], batch["audio_mask"],
                                              method="features")
        x = jax.lax.stop_gradient(x)
        altered, weight, chosen, metrics = self.alter(params, x, frame_mask, k_alter)
        out = self.encoder.apply({"params": params["encoder"]}, altered, frame_mask, deterministic=not train,
                                 rngs={"dropout": k_drop} if train else {}, method="body")
        pred, extra, decoded = self.decode(params, out, chosen, k_decode, step, train)
        weight = weight & frame_mask[..., None]
        return Reconstruction(pred, x, weight, frame_mask, chosen & frame_mask), extra, {**metrics, **decoded}

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """(L1 over the altered entries + the decoder's term, metrics: l1, pred_std* (spread of
        the predictions at the chosen frames), the alteration's statistics, masked_frames (the
        counted entries / frame width: the number of frames for time masking alone))."""
        del state
        rec, extra, metrics = self.reconstruct(params, batch, rng, step, train)
        l1 = masked_l1(rec.pred, rec.target, rec.weight)
        counted = rec.weight.sum().astype(jnp.float32)
        metrics = {**metrics, "l1": l1, "masked_frames": counted / rec.weight.shape[-1],
                   **spread(rec.pred, rec.chosen, prefix="pred")}
        return l1 + extra, metrics


class AlteredReconstruction(MaskedReconstruction):
    """Mockingjay's and TERA's objective: `objective.mask_prob`, `.mask_length`, `.min_masks`,
    `.zero_prob`, `.random_prob` (time), `.freq_mask_fraction` (frequency; 0 = off),
    `.noise_prob`, `.noise_std` (magnitude; probability 0 = off), optional `.collapse.pred_std`
    (the floor of the prediction spread)."""

    def __init__(self, config: Any):
        super().__init__(config)
        o = config["objective"]
        self.mask_prob = float(o["mask_prob"])
        self.mask_length = int(o["mask_length"])
        self.min_masks = int(o["min_masks"])
        self.zero_prob = float(o["zero_prob"])
        self.random_prob = float(o["random_prob"])
        self.freq_mask_fraction = float(o["freq_mask_fraction"])
        self.noise_prob = float(o["noise_prob"])
        self.noise_std = float(o["noise_std"])
        checks = {
            "mask_prob in [0, 1)": 0.0 <= self.mask_prob < 1.0,
            "mask_length >= 1": self.mask_length >= 1,
            "min_masks >= 0": self.min_masks >= 0,
            "zero_prob, random_prob >= 0 with zero_prob + random_prob <= 1":
                min(self.zero_prob, self.random_prob) >= 0.0 and self.zero_prob + self.random_prob <= 1.0,
            "freq_mask_fraction in [0, 1]": 0.0 <= self.freq_mask_fraction <= 1.0,
            "noise_prob in [0, 1] and noise_std >= 0": 0.0 <= self.noise_prob <= 1.0 and self.noise_std >= 0.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            got = o.to_dict() if hasattr(o, "to_dict") else dict(o)
            raise ValueError(f"objective settings out of range: {', '.join(bad)} (got {got})")

    def alter(self, params: Any, x: jax.Array, frame_mask: jax.Array, rng: jax.Array):
        """Time, then frequency, then magnitude alteration (module docstring)."""
        del params
        k_time, k_freq, k_noise = jax.random.split(rng, 3)
        cfg = self.encoder_config
        t = alter_time(k_time, x, frame_mask, mask_prob=self.mask_prob, mask_length=self.mask_length,
                       min_masks=self.min_masks, zero_prob=self.zero_prob, random_prob=self.random_prob)
        out, weight = t.x, jnp.broadcast_to(t.chosen[..., None], x.shape)
        valid = jnp.maximum(frame_mask.sum(), 1).astype(jnp.float32)
        metrics = {"time_fraction": t.chosen.sum() / valid}
        if self.freq_mask_fraction > 0:
            band = frequency_band(k_freq, x.shape[0], cfg.logmel_bins, cfg.logmel_stack, self.freq_mask_fraction)
            hit = band[:, None, :] & frame_mask[..., None]
            out = jnp.where(hit, 0.0, out)
            weight = weight | hit
            metrics["freq_bins"] = band.sum(-1).mean() / cfg.logmel_stack
        if self.noise_prob > 0:
            out, noisy = add_noise(k_noise, out, frame_mask, prob=self.noise_prob, std=self.noise_std)
            metrics["noisy_fraction"] = noisy.mean()
        return out, weight, t.chosen, metrics
