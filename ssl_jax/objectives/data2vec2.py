"""data2vec 2.0 (audio), the efficient recipe (Baevski et al., 2023, "Efficient Self-supervised
Learning with Contextualized Target Representations for Vision, Speech and Language", Sec. 3).

Against data2vec (`objectives.data2vec`):
* one teacher pass serves `num_masks` differently masked copies of each utterance;
* inverse block masking (`masking.inverse_block_mask`): blocks of visible frames are kept;
* the student encodes the visible frames only (MAE-style, `SpeechEncoder(keep=...)`): the
  masked frames are removed before the Transformer and zeroed under the positional
  convolution, so nothing of them reaches the student;
* a light convolutional decoder fills the masked frames in: the student's outputs back at
  their positions, small Gaussian noise (`mask_noise_std`) at the masked ones, then blocks of
  grouped 1-D conv -> LayerNorm -> GELU with residual connections, and a projection to the
  target dimension;
* squared-error regression (beta 0) of the teacher's averaged top-K instance-normalised
  blocks at masked frames, scaled by 1/sqrt(dim).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.feature_extractor import LN_EPS, gelu
from ssl_jax.models.transformer import LAYERDROP_COLLECTION
from ssl_jax.objectives import ema, layerdrop_metrics, masking, register
from ssl_jax.objectives.data2vec import Data2VecObjective, regression_loss


class ConvDecoder(nn.Module):
    """Fills in masked frames: [batch, frames, in_dim] -> [batch, frames, out_dim].

    Attributes:
        dim: decoder width.
        out_dim: target dimension.
        kernel: conv width (odd).
        groups: conv groups.
        layers: conv blocks.
    """

    dim: int
    out_dim: int
    kernel: int
    groups: int
    layers: int

    @nn.compact
    def __call__(self, x: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """x: [batch, frames, in_dim]; frame_mask: bool[batch, frames] (padding stays zero)."""
        if self.kernel % 2 == 0 or self.dim % self.groups:
            raise ValueError(f"decoder kernel must be odd and dim divisible by groups, got {self.kernel}, {self.dim}/{self.groups}")
        m = frame_mask[..., None]
        x = nn.Dense(self.dim, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), name="input_proj")(x)
        for i in range(self.layers):
            h = nn.Conv(
                self.dim, (self.kernel,), padding="SAME", feature_group_count=self.groups,
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("conv_kernel", None, "mlp")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), name=f"conv_{i}",
            )(jnp.where(m, x, 0.0))
            h = nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False,
                             scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("mlp",)),
                             bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), name=f"norm_{i}")(h)
            x = x + gelu(h)
        return nn.Dense(self.out_dim, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed")),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name="output_proj")(x)


class Data2Vec2Student(nn.Module):
    """Encoder on the visible frames, then the decoder over the whole sequence.

    Attributes:
        model: the `EncoderConfig`.
        decoder: (dim, kernel, groups, layers) of the `ConvDecoder`.
        mask_noise_std: std of the noise the decoder reads at masked frames.
    """

    model: Any
    decoder: tuple[int, int, int, int]
    mask_noise_std: float

    @nn.compact
    def __call__(self, wavs, audio_mask, mask_time_indices, keep=None, *, deterministic: bool):
        """wavs/audio_mask [batch, samples]; mask_time_indices bool[batch, frames] (True = masked);
        keep int32[batch, kept] (None at init: all frames). Returns (predictions [batch, frames,
        dim], the encoder's output on the kept frames, bool[batch, frames] valid frames)."""
        from ssl_jax.models.encoder import SpeechEncoder, frame_lengths

        b, t = mask_time_indices.shape
        if keep is None:
            keep = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        out = SpeechEncoder(self.model, name="encoder")(
            wavs, audio_mask, mask_time_indices=mask_time_indices, keep=keep, deterministic=deterministic
        )
        valid = jnp.arange(t)[None, :] < frame_lengths(self.model, audio_mask.sum(-1).astype(jnp.int32))[:, None]
        rows = jnp.arange(b)[:, None]
        h = jnp.where(out.frame_mask[..., None], out.last_hidden_state, 0.0)
        full = jnp.zeros((b, t, h.shape[-1]), h.dtype).at[rows, keep].add(h)
        seen = jnp.zeros((b, t), bool).at[rows, keep].max(out.frame_mask)
        noise = self.mask_noise_std * jax.random.normal(self.make_rng("dropout"), full.shape, full.dtype) \
            if not deterministic else jnp.zeros_like(full)
        x = jnp.where(seen[..., None], full, noise)
        dim, kernel, groups, layers = self.decoder
        pred = ConvDecoder(dim, self.model.hidden_size, kernel, groups, layers, name="decoder")(x, valid)
        return pred, out, valid


@register("data2vec2")
class Data2Vec2Objective(Data2VecObjective):
    """data2vec 2.0 from the full config: `objective.num_masks`, `.mask_prob` (masked fraction),
    `.mask_length` (visible block width), `.decoder.{dim,kernel,groups,layers}`,
    `.mask_noise_std`, and data2vec's targets, loss and EMA settings.

    Params: `{"encoder", "decoder"}`. State: `{"teacher": {"encoder"}}`.
    """

    def __init__(self, config: Any):
        super().__init__(config)
        o = config["objective"]
        self.num_masks = int(o["num_masks"])
        if self.num_masks < 1:
            raise ValueError(f"objective.num_masks must be >= 1, got {self.num_masks}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"objective.mask_prob must be in (0, 1) for inverse block masking, got {self.mask_prob}")
        d = o["decoder"]
        self.module = Data2Vec2Student(
            self.encoder_config, (int(d["dim"]), int(d["kernel"]), int(d["groups"]), int(d["layers"])),
            float(o["mask_noise_std"]),
        )

    def draw_masks(self, batch: dict, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mask bool[batch * num_masks, frames], keep int32[batch * num_masks, kept]) for the
        batch repeated `num_masks` times (copies of an utterance are adjacent rows); a batch's
        `mask_time_indices` ([batch * num_masks, frames], tests) gives the mask, and `keep`
        then holds the unmasked frames first."""
        lengths = jnp.repeat(self.frame_lengths(batch), self.num_masks)
        t = self.num_frames(batch["audio"].shape[1])
        if "mask_time_indices" in batch:
            mask = jnp.asarray(batch["mask_time_indices"], bool)
            k = masking.num_kept(t, self.mask_prob)
            keep = jnp.sort(jnp.argsort(mask, axis=-1, stable=True)[:, :k], axis=-1).astype(jnp.int32)
            return mask, keep
        return masking.inverse_block_mask(rng, lengths, t, mask_prob=self.mask_prob, block=self.mask_length)

    def init(self, rng: jax.Array, batch: dict) -> Any:
        mask = jnp.zeros((batch["audio"].shape[0], self.num_frames(batch["audio"].shape[1])), bool)
        k_params, k_drop = jax.random.split(rng)
        return self.module.init({"params": k_params, "dropout": k_drop}, batch["audio"], batch["audio_mask"], mask,
                                deterministic=True)["params"]

    def loss(self, params: Any, batch: dict, rng: jax.Array, step, train: bool = True, state: Any = None):
        """Regression of the teacher's targets at the masked frames of every copy.

        Returns:
            (loss, metrics as data2vec's, plus visible_fraction: the frames the student encoded).
        """
        k_mask, k_drop = jax.random.split(rng)
        y, _ = self.targets(state["teacher"]["encoder"], batch)
        mask, keep = self.draw_masks(batch, k_mask)
        wavs = jnp.repeat(batch["audio"], self.num_masks, axis=0)
        audio_mask = jnp.repeat(batch["audio_mask"], self.num_masks, axis=0)
        y = jnp.repeat(y, self.num_masks, axis=0)
        (pred, out, valid), sown = self.module.apply(
            {"params": params}, wavs, audio_mask, mask, keep, deterministic=not train, rngs={"dropout": k_drop},
            mutable=[LAYERDROP_COLLECTION],
        )
        masked = mask & valid
        n = jnp.maximum(masked.sum(), 1)
        loss = (regression_loss(pred, y, self.beta, self.scale) * masked).sum() / n
        metrics = {
            **ema.spread(y, masked, "target"),
            **ema.spread(pred, masked, "pred"),
            "ema_decay": self.ema(step),
            "masked_fraction": masked.sum() / jnp.maximum(valid.sum(), 1),
            "visible_fraction": out.frame_mask.sum() / jnp.maximum(valid.sum(), 1),
            "masked_frames": masked.sum().astype(jnp.float32),
        }
        metrics.update(layerdrop_metrics(params, sown))
        return loss, metrics
