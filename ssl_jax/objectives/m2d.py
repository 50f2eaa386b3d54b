"""Masked Modeling Duo (M2D; Niizumi et al., ICASSP 2023, "Masked Modeling Duo: Learning
Representations by Encouraging Both Networks to Model the Input", and its TASLP 2024 extension).

The log-mel patches of every utterance (`ssl_jax.models.patch_encoder`) are split at random into
visible and masked ones (`objective.mask_ratio` of the valid patches masked, unstructured). The
online encoder sees the visible patches only; a narrower Transformer predictor reads its
outputs (and its [CLS] token) projected to the predictor width, with a learned mask token at
every masked position, plus fixed 2-D sin-cos positions, and predicts, through a projection
back to the encoder width, the target network's outputs for the masked patches. The target
network, an exponential moving average of the online encoder, encodes the masked patches only
(so both networks must model the input). Targets are standardised over channels (M2D's
`norm_pix_loss`); the loss is the mean squared error between the l2-normalised prediction
and target (2 - 2 cos) over the masked valid patches. The decay of the average rises from
`objective.ema.start` to `.end` over `.steps` updates (linear in the paper: 0.99995 to 0.99999
over the whole run).

As in the reference, the target network reads the masked patches through the online
encoder's patch embedding and [CLS] token (held constant); only its Transformer blocks and
final LayerNorm are the averaged ones. The teacher state holds a copy of the whole encoder
(`teacher_keys = ("encoder",)`) whose patch embedding and [CLS] token go unused.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models import patch_encoder
from ssl_jax.models.transformer import ACTIVATION_AXES, EncoderLayer, layer_norm
from ssl_jax.objectives import register
from ssl_jax.objectives.ema import EmaObjective, spread
from ssl_jax.objectives.vectors import l2_normalize
from ssl_jax.parallel.sharding import constrain

_TARGET_NORMS = ("layer", "none")


class Predictor(nn.Module):
    """M2D's predictor (MAE's decoder): encoder width -> `dim` -> pre-LN blocks -> encoder width.

    Attributes:
      out_dim: the encoder's token width; dim, num_layers, num_heads, intermediate_size: the
      predictor's Transformer; freq_patches: patches per time step (for the positions).
    """

    out_dim: int
    dim: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    freq_patches: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        cls: jax.Array,
        visible: jax.Array,
        visible_index: jax.Array,
        visible_valid: jax.Array,
        masked_index: jax.Array,
        masked_valid: jax.Array,
    ) -> jax.Array:
        """Predicts the masked patches' target vectors.

        Args:
          cls: [batch, out_dim], the online encoder's [CLS] output.
          visible: [batch, visible, out_dim], its outputs for the visible patches at
            `visible_index` int32[batch, visible] (valid where `visible_valid`).
          masked_index: int32[batch, masked] flat indices of the masked patches, valid where
            `masked_valid`.
        Returns:
          [batch, masked, out_dim] predictions.
        """
        b, k = visible.shape[:2]
        m = masked_index.shape[1]
        embed = nn.Dense(
            self.dim, dtype=self.dtype, name="embed",
            kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), (None, "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        )
        mask_token = self.param("mask_token", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed",)),
                                (self.dim,))
        x = embed(jnp.concatenate([cls[:, None], visible], axis=1).astype(self.dtype))
        pos = patch_encoder.sincos_positions(jnp.concatenate([visible_index, masked_index], axis=1), self.freq_patches,
                                             self.dim).astype(self.dtype)
        tokens = jnp.concatenate([x[:, 1:], jnp.broadcast_to(mask_token.astype(self.dtype), (b, m, self.dim))], axis=1)
        valid = jnp.concatenate([visible_valid, masked_valid], axis=1)
        tokens = jnp.where(valid[..., None], tokens + pos, 0.0)
        h = jnp.concatenate([x[:, :1], tokens], axis=1)  # the [CLS] token at position zero
        mask = jnp.concatenate([jnp.ones((b, 1), bool), valid], axis=1)
        h = constrain(h, ACTIVATION_AXES)
        for i in range(self.num_layers):
            h = EncoderLayer(self.dim, self.num_heads, self.intermediate_size, layer_norm_first=True, dtype=self.dtype,
                             name=f"layers_{i}")(h, mask, None, True)
        h = layer_norm(self.dtype, "layer_norm")(h[:, 1 + k:])
        out = nn.Dense(
            self.out_dim, dtype=self.dtype, name="project",
            kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
        )(h)
        return out.astype(jnp.float32)


def split_patches(rng: jax.Array, valid_patches: jax.Array, num_patches: int, mask_ratio: float) -> dict[str, jax.Array]:
    """Random unstructured split of every row's valid patches into visible and masked ones.

    Row b has `valid_patches[b]` valid patches (the first ones of the grid order, whole time
    steps); floor(n * (1 - mask_ratio)) of them (at least one) stay visible, the rest are
    masked; padded patches are in neither set.

    Args:
      rng: key; valid_patches: int[batch]; num_patches: patches of the padded grid.
    Returns:
      `visible_index` int32[batch, V], `visible_valid` bool[batch, V], `masked_index`
      int32[batch, M], `masked_valid` bool[batch, M], with V = max(1, floor(num_patches *
      (1 - mask_ratio))) and M = num_patches - V (static sizes that fit every row).
    """
    keep = 1.0 - mask_ratio
    num_visible = max(1, int(np.floor(num_patches * keep + 1e-4)))
    num_masked = num_patches - num_visible
    b = valid_patches.shape[0]
    n = valid_patches.astype(jnp.int32)
    noise = jax.random.uniform(rng, (b, num_patches))
    noise = jnp.where(jnp.arange(num_patches)[None, :] < n[:, None], noise, 2.0)  # padding sorts last
    order = jnp.argsort(noise, axis=1).astype(jnp.int32)
    v = jnp.minimum(jnp.maximum(jnp.floor(n * keep + 1e-4).astype(jnp.int32), 1), n)  # [batch]
    j = jnp.arange(num_masked)[None, :]
    masked_index = jnp.take_along_axis(order, jnp.minimum(v[:, None] + j, num_patches - 1), axis=1)
    return {
        "visible_index": order[:, :num_visible],
        "visible_valid": jnp.arange(num_visible)[None, :] < v[:, None],
        "masked_index": masked_index,
        "masked_valid": j < (n - v)[:, None],
    }


def standardize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Zero mean, unit variance over the last axis (no learned scale): [..., dim]."""
    mean = x.mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(jnp.square(x - mean).mean(-1, keepdims=True) + eps)


@register("m2d")
class M2dObjective(EmaObjective):
    """M2D from the full config (`model.*` of the "patches" architecture, `objective.*`).

    Params: `{"encoder", "predictor"}`. State: `{"teacher": {"encoder"}}`.
    Batch: `audio`, `audio_mask`.
    """

    SUMMARY = {"cosine": "masked-patch cosine", "target_std": "target std"}
    teacher_keys = ("encoder",)

    def __init__(self, config: Any):
        super().__init__(config)
        from ssl_jax.models.encoder import config_from

        self.model = config_from(config["model"])
        if not isinstance(self.model, patch_encoder.Config):
            raise ValueError("M2D runs on log-mel patches: set model.architecture='patches' (ssl_jax/models/patch_encoder.py)")
        o = config["objective"]
        self.mask_ratio = float(o["mask_ratio"])
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"objective.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        self.target_norm = str(o["target_norm"])
        if self.target_norm not in _TARGET_NORMS:
            raise ValueError(f"objective.target_norm must be one of {_TARGET_NORMS}, got {self.target_norm!r}")
        p = o["predictor"]
        if int(p["dim"]) % 4 or int(p["dim"]) % int(p["num_heads"]):
            raise ValueError(f"objective.predictor.dim={p['dim']} must be a multiple of 4 and of predictor.num_heads={p['num_heads']}")
        self.encoder = patch_encoder.Encoder(self.model)
        self.predictor = Predictor(self.model.dim, int(p["dim"]), int(p["num_layers"]), int(p["num_heads"]),
                                   int(p["intermediate_size"]), self.model.freq_patches, jnp.dtype(self.model.dtype))

    def init(self, rng: jax.Array, batch: dict) -> Any:
        k_enc, k_pred = jax.random.split(rng)
        encoder = self.encoder.init(k_enc, batch["audio"], batch["audio_mask"])["params"]
        b = batch["audio"].shape[0]
        n = self.model.time_patches(batch["audio"].shape[1]) * self.model.freq_patches
        split = split_patches(jax.random.key(0), jnp.full((b,), n), n, self.mask_ratio)
        d = self.model.dim
        predictor = self.predictor.init(
            k_pred, jnp.zeros((b, d)), jnp.zeros(split["visible_index"].shape + (d,)), split["visible_index"],
            split["visible_valid"], split["masked_index"], split["masked_valid"])["params"]
        return {"encoder": encoder, "predictor": predictor}

    def patches(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(patches [batch, num_patches, patch_dim] in grid order, valid patches int32[batch])."""
        x, time_mask = patch_encoder.patchify(self.model, batch["audio"], batch["audio_mask"])
        b, t, f, p = x.shape
        return x.reshape(b, t * f, p), time_mask.sum(-1).astype(jnp.int32) * f

    def forward(self, params: Any, state: Any, patches: jax.Array, split: dict) -> tuple[jax.Array, jax.Array]:
        """(predictions, targets), each float32 [batch, masked, dim] (targets held constant).

        The online encoder reads the visible patches only, the target network the masked ones.
        """
        enc = params["encoder"]
        _, visible, cls = self.encoder.apply({"params": enc}, patches, split["visible_index"], split["visible_valid"],
                                             method=patch_encoder.Encoder.encode_patches)
        pred = self.predictor.apply({"params": params["predictor"]}, cls, visible, split["visible_index"],
                                    split["visible_valid"], split["masked_index"], split["masked_valid"])
        target_params = dict(state["teacher"]["encoder"])
        for k in ("patch_embed", "cls_token"):  # the online encoder's input embedding (as the reference)
            target_params[k] = enc[k]
        target_params = jax.lax.stop_gradient(target_params)
        _, target, _ = self.encoder.apply({"params": target_params}, patches, split["masked_index"],
                                          split["masked_valid"], method=patch_encoder.Encoder.encode_patches)
        return pred, jax.lax.stop_gradient(target.astype(jnp.float32))

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """Mean over the masked valid patches of |l2n(prediction) - l2n(target)|^2 = 2 - 2 cos.

        Returns:
          (loss, metrics: cosine (mean cosine similarity), masked_fraction, masked_frames (masked
          valid patches, the eval weight), ema_decay, and the collapse monitors of `ema.spread`
          for targets and predictions, on the unit vectors scaled by sqrt(dim)).
        """
        del train  # no dropout: training and evaluation run the same network
        patches, valid = self.patches(batch)
        split = split_patches(rng, valid, patches.shape[1], self.mask_ratio)
        pred, target = self.forward(params, state, patches, split)
        if self.target_norm == "layer":
            target = standardize(target)
        p, t = l2_normalize(pred), l2_normalize(target)
        cos = (p * t).sum(-1)  # [batch, masked]
        w = split["masked_valid"].astype(jnp.float32)
        count = jnp.maximum(w.sum(), 1.0)
        loss = ((2.0 - 2.0 * cos) * w).sum() / count
        scale = float(np.sqrt(self.model.dim))
        metrics = {
            "cosine": (cos * w).sum() / count,
            "masked_fraction": w.sum() / jnp.maximum(valid.sum(), 1).astype(jnp.float32),
            "masked_frames": w.sum(),
            "ema_decay": self.ema(step),
        }
        metrics.update(spread(t * scale, split["masked_valid"], "target"))
        metrics.update(spread(p * scale, split["masked_valid"], "pred"))
        return loss, metrics
