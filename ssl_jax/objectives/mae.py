"""Masked autoencoder on log-mel patches (Audio-MAE; Huang et al., NeurIPS 2022, "Masked
Autoencoders that Listen", after MAE, He et al., CVPR 2022).

The log-mel patches of every utterance (`ssl_jax.models.patch_encoder`) are split at random
into visible and masked ones (`objective.mask_ratio` of the valid patches masked,
unstructured: `m2d.split_patches`). The encoder reads the visible patches only; a light
Transformer decoder (`m2d.Predictor`) reads its outputs and [CLS] token projected to the
decoder width, with a learned mask token at every masked position, plus fixed 2-D sin-cos
positions, and a linear layer maps each masked position to the values of its patch. The loss
is the mean squared error over the patch's values, averaged over the masked valid patches;
with `objective.norm_pix_loss` every target patch is first standardised by its own mean and
variance (MAE's normalised-pixel targets). There is no teacher and no objective state: M2D's
online branch with the input as the target.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax.models import patch_encoder
from ssl_jax.objectives import Objective, register
from ssl_jax.objectives.ema import floors_from_config, spread
from ssl_jax.objectives.m2d import Predictor, split_patches, standardize


def reconstruction_loss(
    pred: jax.Array, patches: jax.Array, split: dict, norm_pix_loss: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """MAE's loss: per-patch mean squared error, averaged over the masked valid patches.

    Args:
      pred: [batch, masked, patch_dim] reconstructions at `split["masked_index"]`.
      patches: [batch, num_patches, patch_dim], the input patches in grid order.
      split: `m2d.split_patches`'s output (`masked_index`, `masked_valid` are read).
      norm_pix_loss: standardise every target patch over its own values first.
    Returns:
      (loss scalar, per-patch errors [batch, masked] (0 where not valid), targets [batch,
      masked, patch_dim], held constant).
    """
    target = jnp.take_along_axis(patches, split["masked_index"][..., None], axis=1).astype(jnp.float32)
    if norm_pix_loss:
        target = standardize(target)
    target = jax.lax.stop_gradient(target)
    w = split["masked_valid"].astype(jnp.float32)
    err = jnp.square(pred.astype(jnp.float32) - target).mean(-1) * w
    return err.sum() / jnp.maximum(w.sum(), 1.0), err, target


@register("mae")
class MaeObjective(Objective):
    """Audio-MAE from the full config (`model.*` of the "patches" architecture, `objective.*`).

    Params: `{"encoder", "decoder"}`; no state. Batch: `audio`, `audio_mask`.
    Floors: `objective.collapse.pred_std` (a decoder that outputs the same patch everywhere,
    the mean target, has a spread near 0).
    """

    SUMMARY = {"pred_std": "prediction spread", "target_std": "target spread"}

    def __init__(self, config: Any):
        from ssl_jax.models.encoder import config_from

        self.config = config
        self.model = config_from(config["model"])
        if not isinstance(self.model, patch_encoder.Config):
            raise ValueError("MAE runs on log-mel patches: set model.architecture='patches' (ssl_jax/models/patch_encoder.py)")
        o = config["objective"]
        self.mask_ratio = float(o["mask_ratio"])
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"objective.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        self.norm_pix_loss = bool(o["norm_pix_loss"])
        d = o["decoder"]
        if int(d["dim"]) % 4 or int(d["dim"]) % int(d["num_heads"]):
            raise ValueError(f"objective.decoder.dim={d['dim']} must be a multiple of 4 and of decoder.num_heads={d['num_heads']}")
        self.floors = floors_from_config(o)
        self.encoder = patch_encoder.Encoder(self.model)
        self.decoder = Predictor(self.model.patch_dim, int(d["dim"]), int(d["num_layers"]), int(d["num_heads"]),
                                 int(d["intermediate_size"]), self.model.freq_patches, jnp.dtype(self.model.dtype))

    def init(self, rng: jax.Array, batch: dict) -> Any:
        k_enc, k_dec = jax.random.split(rng)
        encoder = self.encoder.init(k_enc, batch["audio"], batch["audio_mask"])["params"]
        b = batch["audio"].shape[0]
        n = self.model.time_patches(batch["audio"].shape[1]) * self.model.freq_patches
        split = split_patches(jax.random.key(0), jnp.full((b,), n), n, self.mask_ratio)
        d = self.model.dim
        decoder = self.decoder.init(
            k_dec, jnp.zeros((b, d)), jnp.zeros(split["visible_index"].shape + (d,)), split["visible_index"],
            split["visible_valid"], split["masked_index"], split["masked_valid"])["params"]
        return {"encoder": encoder, "decoder": decoder}

    def patches(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(patches [batch, num_patches, patch_dim] in grid order, valid patches int32[batch])."""
        x, time_mask = patch_encoder.patchify(self.model, batch["audio"], batch["audio_mask"])
        b, t, f, p = x.shape
        return x.reshape(b, t * f, p), time_mask.sum(-1).astype(jnp.int32) * f

    def forward(self, params: Any, patches: jax.Array, split: dict) -> jax.Array:
        """Reconstructions float32 [batch, masked, patch_dim] of the patches at `split["masked_index"]`.

        The encoder reads the visible patches only; the decoder sees the masked ones as the
        mask token at their positions.
        """
        _, visible, cls = self.encoder.apply({"params": params["encoder"]}, patches, split["visible_index"],
                                             split["visible_valid"], method=patch_encoder.Encoder.encode_patches)
        return self.decoder.apply({"params": params["decoder"]}, cls, visible, split["visible_index"],
                                  split["visible_valid"], split["masked_index"], split["masked_valid"])

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """`reconstruction_loss` of a fresh split of the batch's patches.

        Returns:
          (loss, metrics: masked_fraction, masked_frames (masked valid patches, the eval
          weight), and the `ema.spread` monitors of targets and predictions over the masked
          valid patches).
        """
        del step, train, state  # no dropout, no schedule, no state
        patches, valid = self.patches(batch)
        split = split_patches(rng, valid, patches.shape[1], self.mask_ratio)
        pred = self.forward(params, patches, split)
        loss, _, target = reconstruction_loss(pred, patches, split, self.norm_pix_loss)
        w = split["masked_valid"].astype(jnp.float32)
        metrics = {
            "masked_fraction": w.sum() / jnp.maximum(valid.sum(), 1).astype(jnp.float32),
            "masked_frames": w.sum(),
        }
        metrics.update(spread(target, split["masked_valid"], "target"))
        metrics.update(spread(pred, split["masked_valid"], "pred"))
        return loss, metrics
