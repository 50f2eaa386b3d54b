"""data2vec (audio) self-distillation (Baevski et al., 2022, "data2vec", Sec. 3).

The student encodes the input with spans of frames replaced by the mask embedding; the
teacher, an exponential moving average of the student's encoder, encodes the whole input (no
dropout). Targets are the average of the teacher's top K blocks' outputs, each normalised per
utterance over time (instance norm): by default the feed-forward output before the block's
last residual connection, as the paper. At masked frames a linear projection of the
student's output regresses the targets with a smooth L1 loss (beta 0.25; L2 with beta 0),
summed over channels and scaled by 1/sqrt(dim).

`teacher_targets` and `regression_loss` are shared with data2vec 2.0 (`objectives.data2vec2`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.transformer import FFN_COLLECTION, FFN_OUTPUT
from ssl_jax.objectives import ema, layerdrop_metrics, register
from ssl_jax.objectives.masked import MaskedObjective

TARGET_SOURCES = ("ffn", "block")


class StudentModel(nn.Module):
    """Encoder and the final projection to the target space.

    Attributes:
        model: the `EncoderConfig`.
    """

    model: Any

    @nn.compact
    def __call__(self, wavs, audio_mask, mask_time_indices, *, deterministic: bool):
        """Returns (predictions [batch, frames, dim], EncoderOutput)."""
        from ssl_jax.models.encoder import SpeechEncoder

        out = SpeechEncoder(self.model, name="encoder")(
            wavs, audio_mask, mask_time_indices=mask_time_indices, deterministic=deterministic
        )
        pred = nn.Dense(
            self.model.hidden_size,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
            name="final_proj",
        )(out.last_hidden_state)
        return pred, out


def regression_loss(pred: jax.Array, target: jax.Array, beta: float, scale: float) -> jax.Array:
    """Per-frame loss [batch, frames]: smooth L1 (beta > 0) or squared error (beta = 0), summed
    over channels and multiplied by `scale`. pred, target: [batch, frames, dim]."""
    d = pred.astype(jnp.float32) - target
    if beta > 0:
        a = jnp.abs(d)
        per = jnp.where(a < beta, 0.5 * jnp.square(d) / beta, a - 0.5 * beta)
    else:
        per = jnp.square(d)
    return per.sum(-1) * scale


class TeacherTargets:
    """The teacher's regression targets from `objective.targets.*`: `top_k` blocks, `source`
    ("ffn": feed-forward outputs before the last residual, the paper; "block": block outputs),
    `layer_norm` of each block ("instance", "layer" or "none") and `final_norm` of the mean."""

    def __init__(self, encoder_config: Any, t: Any):
        from ssl_jax.models.encoder import SpeechEncoder

        self.top_k = int(t["top_k"])
        self.source = str(t["source"])
        if self.source not in TARGET_SOURCES:
            raise ValueError(f"objective.targets.source must be one of {TARGET_SOURCES}, got {self.source!r}")
        if not 1 <= self.top_k <= encoder_config.num_layers:
            raise ValueError(f"objective.targets.top_k must be in [1, {encoder_config.num_layers}], got {self.top_k}")
        self.layer_norm = str(t["layer_norm"])
        self.final_norm = str(t["final_norm"])
        for how in (self.layer_norm, self.final_norm):
            ema.normalize(jnp.zeros((1, 1, 1)), jnp.ones((1, 1), bool), how)  # raises on an unknown name
        self.encoder = SpeechEncoder(encoder_config)
        self.num_layers = encoder_config.num_layers

    def __call__(self, teacher: Any, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(targets float32[batch, frames, dim] without gradient, frame_mask bool[batch, frames])
        from the teacher's encoder parameters; the teacher reads `clean_audio` when the batch
        has it (the crops before augmentation), else `audio`."""
        source = batch["clean_audio"] if "clean_audio" in batch else batch["audio"]
        wavs = jnp.where(batch["audio_mask"], source, 0.0)
        out, sown = self.encoder.apply(
            {"params": jax.lax.stop_gradient(teacher)}, wavs, batch["audio_mask"], deterministic=True,
            mutable=[FFN_COLLECTION],
        )
        if self.source == "ffn":
            blocks = sown[FFN_COLLECTION]["encoder"]
            layers = [blocks[f"layers_{i}"][FFN_OUTPUT][0] for i in range(self.num_layers)]
        else:
            layers = list(out.hidden_states[1:])
        y = ema.layer_targets(layers, out.frame_mask, self.top_k, self.layer_norm, self.final_norm)
        return y, out.frame_mask


def _scale(o: Any, dim: int) -> float:
    scale = float(o["loss_scale"])
    return 1.0 / math.sqrt(dim) if scale <= 0 else scale


@register("data2vec")
class Data2VecObjective(MaskedObjective, ema.EmaObjective):
    """data2vec from the full config (`model.*`, `objective.*`).

    Params: `{"encoder", "final_proj"}`. State: `{"teacher": {"encoder"}}`.
    Batch: `audio`, `audio_mask`; optional `clean_audio` (the teacher's input) and
    `mask_time_indices` (tests).
    """

    SUMMARY = {"target_std": "target std", "pred_std": "prediction std"}
    teacher_keys = ("encoder",)

    def __init__(self, config: Any):
        MaskedObjective.__init__(self, config)
        ema.EmaObjective.__init__(self, config)
        o = config["objective"]
        self.beta = float(o["loss_beta"])
        self.scale = _scale(o, self.encoder_config.hidden_size)
        self.targets = TeacherTargets(self.encoder_config, o["targets"])
        self.module = StudentModel(self.encoder_config)

    def loss(self, params: Any, batch: dict, rng: jax.Array, step, train: bool = True, state: Any = None):
        """Regression of the teacher's targets at masked frames.

        Returns:
            (loss, metrics: target_std[_time, _batch] and pred_std[...] over masked frames,
            ema_decay, masked_fraction, masked_frames; with LayerDrop dropped_layers and
            NO_GRADIENT).
        """
        k_mask, k_drop = jax.random.split(rng)
        mask = self.draw_mask(batch, k_mask)
        y, _ = self.targets(state["teacher"]["encoder"], batch)
        (pred, out), sown = self.apply(params, batch, mask, k_drop, train)
        masked = mask & out.frame_mask
        n = jnp.maximum(masked.sum(), 1)
        loss = (regression_loss(pred, y, self.beta, self.scale) * masked).sum() / n
        metrics = {
            **ema.spread(y, masked, "target"),
            **ema.spread(pred, masked, "pred"),
            "ema_decay": self.ema(step),
            "masked_fraction": masked.sum() / jnp.maximum(out.frame_mask.sum(), 1),
            "masked_frames": masked.sum().astype(jnp.float32),
        }
        metrics.update(layerdrop_metrics(params, sown))
        return loss, metrics
