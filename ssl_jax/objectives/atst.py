"""ATST: teacher-student Transformers for audio, at clip level (ATST-Clip; Li & Li, 2022, "ATST:
Audio Representation Learning with Teacher-Student Transformer", Interspeech) and at frame level
(ATST-Frame; Li, Shao & Li, 2024, "Self-supervised Audio Teacher-Student Transformer for Both
Clip-level and Frame-level Tasks", IEEE/ACM TASLP).

Both read log-mel tokens of 4 frames x every mel band (40 ms: the encoder's log-mel front end
with `logmel_stack = 4`) and train a student (encoder, projector, predictor) to predict the
projection of a teacher (encoder and projector), the student's EMA with its decay annealed
towards 1 on a cosine (`objective.ema`). Projector and predictor are two-layer MLPs (Linear,
BatchNorm, ReLU, Linear; no biases); the loss is BYOL's normalised MSE, 2 - 2 cos(p, z),
symmetrised over the two views: each view goes through both networks, and the student's
prediction from one view regresses the teacher's projection of the other.

* ATST-Clip (`objective.level = "clip"`): two independent random crops of each utterance (6 s
  of 10-s clips in the paper), each augmented by Mixup and Random Resized Crop of its log-mel
  spectrogram; one embedding per crop.
* ATST-Frame (`objective.level = "frame"`): one crop and two time-aligned views of it, the
  first unaugmented and the second with Mixup and a Random Resized Crop in frequency only;
  the student reads both under the same block mask (spans of `mask_length` tokens, the fairseq
  `mask_prob` convention of `masking.span_mask`; masked tokens get the learned mask embedding),
  the teacher reads them unmasked, and the loss is taken token by token at the masked valid
  tokens.

The augmentations run in the graph, drawn per row, on the front end's log-mel frames (the
encoder's `LogMelFrontend` output is rewritten through `flax.linen.intercept_methods`, so the
student and the teacher read the same views):

* Mixup (`spec_augment.log_mixup_exp`, as BYOL-A): x <- log((1 - a) exp(x) + a exp(z)),
  a ~ U(0, `mixup`), z the log-mel of the next utterance of the batch where both are valid
  (the paper draws z from a memory bank of past inputs).
* Random Resized Crop: a band of clip(U(`freq_scale`) x bins) adjacent mel bands, placed at
  random, is linearly resized onto all bands; in time (clip level) the frames sit centred on a
  canvas `time_canvas` times as long, filled with the utterance's lowest log-mel value, and a
  window of clip(U(`time_scale`) x frames) canvas frames is resized onto the frames.

Deviations: the encoder is `SpeechEncoder` (convolutional positional embedding instead of
learned absolute positions, no stochastic depth); it has no CLS token, so ATST-Clip's clip
embedding is the mean of the last layer (after the final LayerNorm) over valid frames; the
heads' BatchNorm always normalises by the statistics of the rows that enter the loss (clips,
or masked valid tokens of the batch) and keeps no running averages, as the heads serve the loss
only; natural-log mel energies (the paper: dB, min-max scaled; the encoder's feature LayerNorm
removes the scale); linear instead of bicubic interpolation; the teacher runs without dropout.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.config_fields import from_section
from ssl_jax.data import spec_augment
from ssl_jax.data.shards import SAMPLE_RATE
from ssl_jax.models.frontends import LogMelFrontend
from ssl_jax.models.transformer import LAYERDROP_COLLECTION
from ssl_jax.objectives import ema, layerdrop_metrics, masking, register
from ssl_jax.objectives.vectors import l2_normalize

LEVELS = ("clip", "frame")
BN_EPS = 1e-5


def _pair(value: Any, name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0.0 < lo <= hi:
        raise ValueError(f"objective.augment.{name} must be (low, high) with 0 < low <= high, got {tuple(value)}")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class ViewAugment:
    """The log-mel augmentations of a view (`objective.augment.*`).

    Attributes:
      mixup: the largest mixing weight a of the other utterance (0 = off).
      freq_scale: range of the band height drawn, in units of all bands (values >= 1 keep all).
      time_scale: range of the window length drawn, in units of the utterance's frames.
      time_canvas: the canvas length in units of the utterance's frames (>= 1).
      first_view: whether the first view is augmented too (ATST-Frame: False).
    """

    mixup: float = 0.4
    freq_scale: tuple[float, float] = (0.6, 1.5)
    time_scale: tuple[float, float] = (1.0, 1.0)
    time_canvas: float = 1.0
    first_view: bool = True

    def __post_init__(self):
        if not 0.0 <= self.mixup < 1.0:
            raise ValueError(f"objective.augment.mixup must lie in [0, 1), got {self.mixup}")
        if self.time_canvas < 1.0:
            raise ValueError(f"objective.augment.time_canvas must be >= 1, got {self.time_canvas}")
        object.__setattr__(self, "freq_scale", _pair(self.freq_scale, "freq_scale"))
        object.__setattr__(self, "time_scale", _pair(self.time_scale, "time_scale"))

    @classmethod
    def from_config(cls, cfg: Any) -> "ViewAugment":
        return from_section(cls, cfg, "objective.augment")

    @property
    def warps_time(self) -> bool:
        """False when every draw keeps the frames as they are."""
        return self.time_scale[0] < 1.0 or self.time_canvas > 1.0


def draw_augment(key: jax.Array, on: jax.Array, aug: ViewAugment) -> dict[str, jax.Array]:
    """Per-row augmentation draws, float32[rows] each; rows where `on` (bool[rows]) is False
    get the identity (no mixing, all bands, the whole utterance)."""
    k = jax.random.split(key, 5)

    def uniform(i: int, lo: float = 0.0, hi: float = 1.0) -> jax.Array:
        return jax.random.uniform(k[i], on.shape, minval=lo, maxval=hi)

    return {
        "alpha": jnp.where(on, aug.mixup * uniform(0), 0.0),
        "freq_scale": jnp.where(on, uniform(1, *aug.freq_scale), 1.0),
        "freq_pos": jnp.where(on, uniform(2), 0.0),
        "time_scale": jnp.where(on, uniform(3, *aug.time_scale), 1.0),
        "time_pos": jnp.where(on, uniform(4), 0.0),
        "canvas": jnp.where(on, aug.time_canvas, 1.0),
    }


def _lerp_gather(x: jax.Array, pos: jax.Array, valid_len: jax.Array, fill: Any, axis: int) -> jax.Array:
    """Linear interpolation of `x` [rows, time, bands] along `axis` (1 or 2) at the float
    positions `pos` (broadcastable to `x`); positions outside [0, valid_len) read `fill`."""
    i0 = jnp.floor(pos)
    frac = pos - i0
    i0 = i0.astype(jnp.int32)

    def at(i):
        v = jnp.take_along_axis(x, jnp.broadcast_to(jnp.clip(i, 0, x.shape[axis] - 1), x.shape), axis=axis)
        return jnp.where((i >= 0) & (i < valid_len), v, fill)

    return at(i0) * (1.0 - frac) + at(i0 + 1) * frac


def augment_logmel(mel: jax.Array, lengths: jax.Array, draws: dict[str, jax.Array], bins: int, stack: int,
                   groups: int, aug: ViewAugment) -> jax.Array:
    """Mixup, then Random Resized Crop in frequency and (if configured) time.

    Args:
      mel: [rows, frames, stack * bins] stacked log-mel frames (zero beyond `lengths`).
      lengths: int[rows] valid stacked frames.
      draws: `draw_augment`'s per-row values.
      bins, stack: the front end's mel bands and stacked frames per token.
      groups: the rows form `groups` consecutive blocks (views); each row mixes with the next
        row of its block.
      aug: the settings (which parts run).
    Returns:
      [rows, frames, stack * bins], zero beyond `lengths`.
    """
    rows, frames, dim = mel.shape
    x = mel.astype(jnp.float32).reshape(rows, frames * stack, bins)
    n = (lengths * stack).astype(jnp.int32)  # valid 10 ms frames
    t = jnp.arange(frames * stack)
    valid = t[None, :] < n[:, None]
    if aug.mixup > 0.0:
        def next_row(a: jax.Array) -> jax.Array:
            return jnp.roll(a.reshape(groups, rows // groups, *a.shape[1:]), -1, axis=1).reshape(a.shape)

        other, other_valid = next_row(x), next_row(valid)
        mixed = spec_augment.log_mixup_exp(x, other, draws["alpha"])
        x = jnp.where((valid & other_valid)[..., None] & (draws["alpha"] > 0.0)[:, None, None], mixed, x)
    if aug.freq_scale[0] < 1.0:  # else every draw keeps all bands
        h = jnp.clip(jnp.floor(draws["freq_scale"] * bins), 1, bins)
        start = jnp.minimum(jnp.floor(draws["freq_pos"] * (bins - h + 1)), bins - h)
        pos = start[:, None] + jnp.arange(bins)[None, :] * ((h - 1) / max(bins - 1, 1))[:, None]  # [rows, bins]
        x = _lerp_gather(x, pos[:, None, :], jnp.asarray(bins), 0.0, axis=2)
    if aug.warps_time:
        nf = n.astype(jnp.float32)
        canvas = jnp.maximum(jnp.floor(nf * draws["canvas"]), nf)
        w = jnp.clip(jnp.floor(draws["time_scale"] * nf), 1.0, jnp.maximum(canvas, 1.0))
        start = jnp.minimum(jnp.floor(draws["time_pos"] * (canvas - w + 1)), canvas - w)
        offset = jnp.floor((canvas - nf) / 2)
        pos = start[:, None] - offset[:, None] + t[None, :] * ((w - 1) / jnp.maximum(nf - 1, 1.0))[:, None]
        fill = jnp.where(valid[..., None], x, jnp.inf).min(axis=(1, 2))
        fill = jnp.where(jnp.isfinite(fill), fill, 0.0)[:, None, None]
        x = _lerp_gather(x, pos[:, :, None], n[:, None, None], fill, axis=1)
    x = jnp.where(valid[..., None], x, 0.0)
    return x.reshape(rows, frames, dim).astype(mel.dtype)


def frontend_hook(fn: Callable[[jax.Array, jax.Array], jax.Array]):
    """A context in which every `LogMelFrontend` call returns `(fn(frames, lengths), lengths)`."""

    def intercept(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, LogMelFrontend) and context.method_name == "__call__":
            frames, lengths = out
            return fn(frames, lengths), lengths
        return out

    return nn.intercept_methods(intercept)


def masked_batch_norm(x: jax.Array, weights: jax.Array) -> jax.Array:
    """Standardises every channel of `x` [..., dim] by its mean and variance over the entries
    of the leading axes weighted by `weights` [...] (BatchNorm's training statistics)."""
    x = x.astype(jnp.float32)
    w = weights.astype(jnp.float32)[..., None]
    axes = tuple(range(x.ndim - 1))
    n = jnp.maximum(w.sum(axes), 1.0)
    mean = (x * w).sum(axes) / n
    var = (jnp.square(x - mean) * w).sum(axes) / n
    return (x - mean) * jax.lax.rsqrt(var + BN_EPS)


class Mlp(nn.Module):
    """BYOL's head: Linear -> BatchNorm (batch statistics, learned scale and shift) -> ReLU -> Linear.

    Attributes:
      hidden: hidden width; out: output width; in_axis: logical axis name of the input.
    """

    hidden: int
    out: int
    in_axis: str | None = "embed"

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
        """x: [..., in] with weights [...] (rows that set the statistics) -> [..., out] float32."""
        h = nn.Dense(self.hidden, use_bias=False,
                     kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (self.in_axis, "mlp")),
                     name="dense_0")(x.astype(jnp.float32))
        scale = self.param("bn_scale", nn.with_logical_partitioning(nn.initializers.ones, ("mlp",)), (self.hidden,))
        bias = self.param("bn_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (self.hidden,))
        h = jax.nn.relu(masked_batch_norm(h, weights) * scale + bias)
        return nn.Dense(self.out, use_bias=False,
                        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", None)),
                        name="dense_1")(h)


class AtstModel(nn.Module):
    """Encoder, projector and (student only) predictor.

    Attributes:
      model: the `EncoderConfig`; level: "clip" or "frame"; hidden, dim: the heads' widths.
    """

    model: Any
    level: str
    hidden: int
    dim: int

    @nn.compact
    def __call__(self, wavs: jax.Array, audio_mask: jax.Array, select: jax.Array, *, mask_input: bool,
                 deterministic: bool, predict: bool) -> tuple[jax.Array, jax.Array, Any]:
        """Encodes `wavs` [rows, samples] and projects (and predicts).

        Args:
          select: bool[rows, frames]: the frame level's loss tokens (also masked when `mask_input`).
        Returns:
          (outputs float32 [rows, dim] (clip) or [rows, frames, dim] (frame), their weights
          float32 [rows] or [rows, frames] (valid clips, or selected valid tokens), EncoderOutput).
        """
        from ssl_jax.models.encoder import SpeechEncoder

        out = SpeechEncoder(self.model, name="encoder")(
            wavs, audio_mask, mask_time_indices=select if mask_input else None, deterministic=deterministic
        )
        h = out.last_hidden_state.astype(jnp.float32)
        if self.level == "clip":
            m = out.frame_mask[..., None].astype(jnp.float32)
            x = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
            weights = (out.frame_mask.sum(1) > 0).astype(jnp.float32)
        else:
            x = h
            weights = (select & out.frame_mask).astype(jnp.float32)
        z = Mlp(self.hidden, self.dim, name="projector")(x, weights)
        if predict:
            z = Mlp(self.hidden, self.dim, in_axis=None, name="predictor")(z, weights)
        return z, weights, out


def byol_loss(pred: jax.Array, target: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean of 2 - 2 cos(pred, target), mean cosine), weighted by `weights` [...]; pred and
    target [..., dim]."""
    cos = (l2_normalize(pred.astype(jnp.float32)) * l2_normalize(target.astype(jnp.float32))).sum(-1)
    n = jnp.maximum(weights.sum(), 1.0)
    return ((2.0 - 2.0 * cos) * weights).sum() / n, (cos * weights).sum() / n


@register("atst")
class AtstObjective(ema.EmaObjective):
    """ATST-Clip or ATST-Frame from the full config (`model.*` with the log-mel front end,
    `objective.level`, `.crop_seconds`, `.symmetric`, `.head_hidden`, `.head_dim`,
    `.mask_prob`, `.mask_length`, `.min_masks`, `.augment.*`, `.ema.*`, `.collapse.*`).

    Params: `{"encoder", "projector", "predictor"}`. State: `{"teacher": {"encoder", "projector"}}`.
    Batch: `audio`, `audio_mask`; optional `mask_time_indices` bool[batch, frames] fixes the
    frame level's mask (tests; frames of a crop).
    """

    teacher_keys = ("encoder", "projector")
    SUMMARY = {"cosine": "student-teacher cosine", "target_std": "target spread"}

    def __init__(self, config: Any):
        from ssl_jax.models.encoder import EncoderConfig

        super().__init__(config)
        self.encoder_config = m = EncoderConfig.from_config(config["model"])
        if m.frontend != "logmel":
            raise ValueError("ATST reads log-mel tokens: set model.frontend='logmel'")
        o = config["objective"]
        self.level = str(o["level"])
        if self.level not in LEVELS:
            raise ValueError(f"objective.level must be one of {LEVELS}, got {self.level!r}")
        self.crop_seconds = float(o["crop_seconds"])
        if self.crop_seconds < 0:
            raise ValueError(f"objective.crop_seconds must be >= 0 (0 = the whole utterance), got {self.crop_seconds}")
        self.symmetric = bool(o["symmetric"])
        self.mask_prob = float(o["mask_prob"])
        self.mask_length = int(o["mask_length"])
        self.min_masks = int(o["min_masks"])
        if self.level == "frame" and (not 0.0 < self.mask_prob or self.mask_length < 1):
            raise ValueError("the frame level needs objective.mask_prob > 0 and objective.mask_length >= 1")
        self.augment = ViewAugment.from_config(o["augment"])
        self.module = AtstModel(m, self.level, int(o["head_hidden"]), int(o["head_dim"]))

    # -- shapes and views

    def crop_samples(self, num_samples: int) -> int:
        """Samples of a view of a batch `num_samples` wide."""
        crop = int(round(self.crop_seconds * SAMPLE_RATE))
        return num_samples if crop == 0 else min(crop, num_samples)

    def num_frames(self, num_samples: int) -> int:
        """Encoder tokens of a view of a batch `num_samples` wide."""
        from ssl_jax.models.encoder import frame_lengths

        return int(frame_lengths(self.encoder_config, np.asarray([self.crop_samples(num_samples)]))[0])

    def views(self, key: jax.Array, audio: jax.Array, audio_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The two views' waveforms [2 * batch, crop] and masks: the first view's rows, then the
        second's; each crop lies at a random place in the utterance's valid samples (the whole
        utterance when shorter). The frame level's views share one crop."""
        batch, width = audio.shape
        crop = self.crop_samples(width)
        lengths = audio_mask.sum(-1).astype(jnp.int32)
        crops = 2 if self.level == "clip" else 1
        room = jnp.maximum(lengths - crop, 0)
        starts = jnp.floor(jax.random.uniform(key, (crops, batch)) * (room + 1).astype(jnp.float32)).astype(jnp.int32)
        starts = jnp.minimum(starts, room)
        wav = jax.vmap(jax.vmap(lambda a, s: jax.lax.dynamic_slice(a, (s,), (crop,)), (0, 0)), (None, 0))(audio, starts)
        mask = jnp.arange(crop)[None, None, :] < jnp.minimum(lengths[None, :] - starts, crop)[..., None]
        if crops == 1:
            wav, mask = jnp.concatenate([wav, wav]), jnp.concatenate([mask, mask])
        return wav.reshape(2 * batch, crop), mask.reshape(2 * batch, crop)

    def draw_mask(self, batch: dict, rng: jax.Array, lengths: jax.Array, num_frames: int) -> jax.Array:
        """bool[batch, frames]: the frame level's mask (`mask_time_indices` when the batch has it)."""
        if "mask_time_indices" in batch:
            mask = jnp.asarray(batch["mask_time_indices"], bool)
            if mask.shape != (lengths.shape[0], num_frames):
                raise ValueError(f"mask_time_indices has shape {mask.shape}, expected {(lengths.shape[0], num_frames)}")
            return mask
        return masking.span_mask(rng, lengths, num_frames, mask_prob=self.mask_prob, mask_length=self.mask_length,
                                 min_masks=self.min_masks)

    def init(self, rng: jax.Array, batch: dict) -> Any:
        crop = self.crop_samples(batch["audio"].shape[1])
        wavs, mask = batch["audio"][:, :crop], batch["audio_mask"][:, :crop]
        select = jnp.zeros((wavs.shape[0], self.num_frames(crop)), bool)
        k_params, k_drop = jax.random.split(rng)
        return self.module.init({"params": k_params, "dropout": k_drop}, wavs, mask, select, mask_input=True,
                                 deterministic=True, predict=True)["params"]

    # -- loss

    def _hook(self, draws: dict[str, jax.Array], groups: int):
        m = self.encoder_config
        return frontend_hook(lambda frames, lengths: augment_logmel(
            frames, lengths, draws, m.logmel_bins, m.logmel_stack, groups, self.augment))

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """BYOL loss between the student's predictions and the teacher's projections of the
        other view (clips, or masked valid tokens).

        Returns:
            (loss, metrics: cosine, target_std / pred_std (and their _time / _batch parts at
            the frame level) of the l2-normalised outputs, ema_decay, masked_frames (tokens or
            clips in the loss), masked_fraction (frame level), dropped_layers with LayerDrop).
        """
        from ssl_jax.models.encoder import frame_lengths

        k_crop, k_aug, k_mask, k_drop = jax.random.split(rng, 4)
        audio, audio_mask = batch["audio"], batch["audio_mask"].astype(bool)
        batch_size = audio.shape[0]
        wavs, wav_mask = self.views(k_crop, audio, audio_mask)
        frames = self.num_frames(audio.shape[1])
        lengths = frame_lengths(self.encoder_config, wav_mask.sum(-1).astype(jnp.int32))
        if self.level == "frame":
            mask = self.draw_mask(batch, k_mask, lengths[:batch_size], frames)
            mask = jnp.concatenate([mask, mask])
        else:
            mask = jnp.zeros((2 * batch_size, frames), bool)
        on = jnp.concatenate([jnp.full((batch_size,), self.augment.first_view), jnp.ones((batch_size,), bool)])
        draws = draw_augment(k_aug, on, self.augment)

        student_rows = slice(None) if self.symmetric else slice(batch_size, None)
        teacher_rows = slice(None) if self.symmetric else slice(None, batch_size)
        groups = 2 if self.symmetric else 1
        with self._hook({k: v[student_rows] for k, v in draws.items()}, groups):
            (pred, weights, _), sown = self.module.apply(
                {"params": params}, wavs[student_rows], wav_mask[student_rows], mask[student_rows],
                mask_input=self.level == "frame", deterministic=not train, predict=True,
                rngs={"dropout": k_drop}, mutable=[LAYERDROP_COLLECTION],
            )
        with self._hook({k: v[teacher_rows] for k, v in draws.items()}, groups):
            target, target_weights, _ = self.module.apply(
                {"params": state["teacher"]}, wavs[teacher_rows], wav_mask[teacher_rows], mask[teacher_rows],
                mask_input=False, deterministic=True, predict=False,
            )
        target = jax.lax.stop_gradient(target)
        if self.symmetric:  # the first view's rows regress the second view's targets and vice versa
            target = jnp.roll(target, batch_size, axis=0)
            target_weights = jnp.roll(target_weights, batch_size, axis=0)
        weights = weights * target_weights
        loss, cosine = byol_loss(pred, target, weights)

        support = None if self.level == "clip" else weights > 0
        metrics = {"cosine": cosine, "ema_decay": self.ema(step), "masked_frames": weights.sum()}
        metrics.update(ema.spread(l2_normalize(target), support, "target"))
        metrics.update(ema.spread(l2_normalize(pred), support, "pred"))
        if self.level == "frame":
            valid = jnp.arange(frames)[None, :] < lengths[:batch_size, None]
            metrics["masked_fraction"] = (mask[:batch_size] & valid).sum() / jnp.maximum(valid.sum(), 1)
        metrics.update(layerdrop_metrics(params, sown))
        return loss, metrics
