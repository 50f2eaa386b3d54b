"""BYOL-A: BYOL on two augmented views of one log-mel segment (Niizumi et al., 2021, "BYOL for
Audio"; Niizumi et al., 2023, "BYOL for Audio: Exploring Pre-trained General-purpose Audio
Representations").

Each utterance gives one random segment of `objective.crop_frames` normalised log-mel frames;
two views of it are drawn independently (mixup with a past segment from a FIFO memory bank,
random resize crop, random linear fader: ssl_jax/data/spec_augment.py) and the pair is
standardised together. The online network (the audio_cnn encoder's clip embedding, a projector
MLP d -> 4096 -> 256 and a predictor MLP 256 -> 4096 -> 256) predicts the target network's
projection of the other view; the target network is the EMA of the online encoder and projector
(decay 0.99). Loss per clip: (2 - 2 cos(p1, z2')) + (2 - 2 cos(p2, z1')), as BYOL's
symmetrised normalised MSE.

Deviations: the projector's and predictor's BatchNorm always normalises with the statistics of
the view's batch (BYOL's training mode; no running statistics, which nothing outside this
objective would read); the target network runs without dropout; the memory bank receives each
batch's segments after the update (the reference appends each segment before mixing the next
one); a segment of an utterance shorter than `crop_frames` is zero beyond it and all its frames
count (the reference zero-pads the waveform).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.data.spec_augment import Augment, bank_push, normalize_batch, random_crop
from ssl_jax.models import audio_cnn
from ssl_jax.models.encoder import config_from
from ssl_jax.objectives import STATE_INPUT, register
from ssl_jax.objectives.ema import EmaObjective, spread
from ssl_jax.objectives.vectors import l2_normalize

_BN_EPS = 1e-5


def _dense(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]), name=name)


class MLPHead(nn.Module):
    """BYOL's projector / predictor: Linear -> BatchNorm (batch statistics) -> ReLU -> Linear.

    Attributes: hidden (4096); out (256).
    """

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [views, batch, dim] -> [views, batch, out]; statistics over each view's batch."""
        h = _dense(self.hidden, ("embed", "mlp"), "fc1")(x)
        mean = h.mean(1, keepdims=True)
        var = jnp.square(h - mean).mean(1, keepdims=True)
        scale = self.param("bn_scale", nn.with_logical_partitioning(nn.initializers.ones, ("mlp",)), (self.hidden,))
        bias = self.param("bn_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (self.hidden,))
        h = nn.relu((h - mean) * jax.lax.rsqrt(var + _BN_EPS) * scale + bias)
        return _dense(self.out, ("mlp", "embed"), "fc2")(h)


@register("byola")
class ByolaObjective(EmaObjective):
    """BYOL-A from the full config (`model.*` of the audio_cnn architecture, `objective.*`).

    Params: `{"encoder", "projector", "predictor"}`. State: `{"teacher": {"encoder",
    "projector"}, "bank": [bank_size, crop_frames, bins], "bank_count": int32}`.
    Batch: `audio` [batch, samples], `audio_mask`.
    """

    teacher_keys = ("encoder", "projector")
    SUMMARY = {"cosine": "view cosine", "target_std": "target spread"}

    def __init__(self, config: Any):
        super().__init__(config)
        self.encoder_config = config_from(config["model"])
        if not isinstance(self.encoder_config, audio_cnn.Config):
            raise ValueError("BYOL-A trains the audio_cnn encoder: set model.architecture='audio_cnn'")
        o = config["objective"]
        self.crop_frames = int(o["crop_frames"])
        per_frame = math.prod(self.encoder_config.time_pool)
        if self.crop_frames < per_frame:
            raise ValueError(f"objective.crop_frames ({self.crop_frames}) must cover at least one output frame "
                             f"({per_frame} log-mel frames)")
        self.augment = Augment.from_config(o["augment"])
        self.encoder = audio_cnn.Encoder(self.encoder_config)
        self.projector = MLPHead(int(o["projector_hidden"]), int(o["projection_dim"]))
        self.predictor = MLPHead(int(o["projector_hidden"]), int(o["projection_dim"]))
        self._init_compiled = jax.jit(self._init_params)

    def _segment_shape(self) -> tuple[int, int]:
        return self.crop_frames, self.encoder_config.logmel_bins

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Boxed parameters (independent of the batch's shape: the networks read fixed segments).

        Runs as one compiled program (the teacher's initialisation reuses it)."""
        del batch
        return self._init_compiled(rng)

    def _init_params(self, rng: jax.Array) -> Any:
        k_enc, k_proj, k_pred = jax.random.split(rng, 3)
        x = jnp.zeros((2, *self._segment_shape()), jnp.float32)
        enc = self.encoder.init({"params": k_enc}, x, jnp.ones(x.shape[:2], bool), method="encode")["params"]
        d = self.encoder_config.hidden_size
        proj = self.projector.init(k_proj, jnp.zeros((2, 2, d), jnp.float32))["params"]
        pred = self.predictor.init(k_pred, jnp.zeros((2, 2, self.projector.out), jnp.float32))["params"]
        return {"encoder": enc, "projector": proj, "predictor": pred}

    def extra_state(self, rng: jax.Array, batch: dict) -> dict:
        """The empty mixup memory bank."""
        del rng, batch
        return {"bank": jnp.zeros((self.augment.bank_size, *self._segment_shape()), jnp.float32),
                "bank_count": jnp.zeros((), jnp.int32)}

    def views(self, batch: dict, k_crop: jax.Array, k_views: jax.Array,
              state: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(views [2 x batch, crop_frames, bins] (first all view 1, then all view 2), the segments
        [batch, crop_frames, bins] before augmentation, valid bool[batch]: utterances with audio)."""
        spec, valid = audio_cnn.log_mel(self.encoder_config, batch["audio"], batch["audio_mask"])
        lengths = valid.sum(-1)
        segments = random_crop(k_crop, spec, lengths, self.crop_frames)
        bank, count = state["bank"], state["bank_count"]
        # Every draw is per row, so one call on the segments twice gives two independent views
        # (and compiles once).
        both = self.augment(k_views, jnp.concatenate([segments, segments]), bank, count)
        return normalize_batch(both), segments, lengths > 0

    def _embed(self, params: Any, x: jax.Array, train: bool, rng: jax.Array | None):
        """(encoder output, projections [2, batch, projection_dim]) of views x [2 x batch, frames, bins]."""
        out = self.encoder.apply({"params": params["encoder"]}, x, jnp.ones(x.shape[:2], bool), deterministic=not train,
                                 rngs={"dropout": rng} if train else {}, method="encode")
        z = self.projector.apply({"params": params["projector"]}, out.pooled.reshape(2, -1, out.pooled.shape[-1]))
        return out, z

    def loss(self, params: Any, batch: dict, rng: jax.Array, step, train: bool = True, state: Any = None):
        """BYOL's symmetrised loss, averaged over utterances with audio.

        Returns:
            (loss, metrics: cosine (mean cosine of predictions and targets), target_std and
            pred_std (spread of the l2-normalised target projections and predictions across the
            clips, times sqrt(dim): about 1 for directions spread over the sphere, 0 at
            collapse), frame_std* (spread of the online encoder's output frames), bank_fill,
            ema_decay, masked_frames (utterances with audio), STATE_INPUT {"segments"}).
        """
        if state is None:
            raise ValueError("BYOL-A needs its objective state (teacher and memory bank)")
        k_crop, k_views, k_drop = jax.random.split(rng, 3)
        views, segments, valid = self.views(batch, k_crop, k_views, state)
        out, z = self._embed(params, views, train, k_drop)
        p = self.predictor.apply({"params": params["predictor"]}, z)
        teacher = jax.lax.stop_gradient(state["teacher"])
        _, target = self._embed(teacher, views, False, None)
        target = jax.lax.stop_gradient(target)
        p, target = l2_normalize(p), l2_normalize(target)
        cos = (p * target[::-1]).sum(-1)  # [2, batch]: view 1's prediction of view 2's target, and back
        w = valid.astype(jnp.float32)
        n = jnp.maximum(w.sum(), 1.0)
        loss = ((2.0 - 2.0 * cos).sum(0) * w).sum() / n
        dim = p.shape[-1]
        metrics = {
            "cosine": (cos.mean(0) * w).sum() / n,
            **spread(target.reshape(-1, dim) * jnp.sqrt(dim), prefix="target"),
            **spread(p.reshape(-1, dim) * jnp.sqrt(dim), prefix="pred"),
            **spread(out.last_hidden_state, out.frame_mask, prefix="frame"),
            "bank_fill": state["bank_count"].astype(jnp.float32),
            "ema_decay": self.ema(step),
            "masked_frames": w.sum(),
            STATE_INPUT: {"segments": segments},
        }
        return loss, metrics

    def update_state(self, state: Any, params: Any, step: Any, inputs: Any = None) -> Any:
        """The EMA teacher update, then this batch's segments pushed into the memory bank."""
        state = super().update_state(state, params, step, inputs)
        if inputs is not None:
            bank, count = bank_push(state["bank"], state["bank_count"], inputs["segments"])
            state = {**state, "bank": bank, "bank_count": count}
        return state
