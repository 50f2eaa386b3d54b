"""Discrete BERT: masked language modelling over discrete speech units (Baevski et al., 2019,
"Effectiveness of self-supervised pre-training for speech recognition", Sec. 3).

The input is a sequence of unit ids, here the k-means units of MFCC frames that HuBERT's first
iteration predicts (the paper used vq-wav2vec codes): the encoder's `units` front end
(`models.frontends.UnitFrontend`) assigns every 20 ms frame to the nearest center of a frozen
codebook and embeds the id. Spans of frames get the mask embedding, and a softmax layer over
the units predicts the masked frames' ids (cross-entropy on masked valid frames). The
codebook lives in the encoder's parameters, so a trained model runs from audio alone
(`Upstream`), and the objective holds it still: it is reported under `optimizer.NO_GRADIENT`,
so neither updates nor weight decay move it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.frontends import UnitFrontend
from ssl_jax.objectives import accuracy_floor, layerdrop_metrics, register
from ssl_jax.objectives.masked import MaskedObjective, rebox
from ssl_jax.training.optimizer import NO_GRADIENT

FROZEN = ("mean", "std", "centers")  # the front end's codebook parameters


class UnitPredictionModel(nn.Module):
    """Encoder with the units front end and a softmax layer over the units."""

    model: Any

    @nn.compact
    def __call__(self, wavs, audio_mask, mask_time_indices, *, deterministic: bool):
        """Returns (logits f32[batch, frames, units], EncoderOutput)."""
        from ssl_jax.models.encoder import SpeechEncoder

        out = SpeechEncoder(self.model, name="encoder")(
            wavs, audio_mask, mask_time_indices=mask_time_indices, deterministic=deterministic
        )
        logits = nn.Dense(
            self.model.units,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "vocab")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            name="head",
        )(out.last_hidden_state)
        return logits.astype(jnp.float32), out


@register("discrete_bert")
class DiscreteBertObjective(MaskedObjective):
    """Discrete BERT from the full config (`model.frontend = "units"`, `objective.*`,
    `objective.targets.*` for the codebook, as the HuBERT recipes).

    Params: `{"encoder" (with the frozen codebook in encoder/frontend), "head"}`.
    """

    SUMMARY = {"accuracy": "masked unit accuracy"}

    def __init__(self, config: Any):
        super().__init__(config)
        m = self.encoder_config
        if m.frontend != "units":
            raise ValueError("Discrete BERT reads unit ids: set model.frontend='units' (and model.units)")
        o = config["objective"]
        t = o["targets"]
        if t["source"] != "mfcc" or tuple(t["num_clusters"]) != (m.units,):
            raise ValueError(f"Discrete BERT's units are one MFCC codebook of model.units={m.units} clusters: set "
                             f"objective.targets.source='mfcc' and num_clusters=({m.units},)")
        self.module = UnitPredictionModel(m)
        self.floors = accuracy_floor(1.0 / m.units)
        self.codebooks = None

    def prepare(self, data_path: str, workdir: str) -> None:
        """Loads the unit codebook, fitting it first when none is named (`ssl_jax.cluster`)."""
        from ssl_jax import cluster

        self.codebooks = cluster.ensure_codebooks(self.config, data_path, workdir)

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Parameters with the codebook written into the front end."""
        if self.codebooks is None:
            raise RuntimeError("DiscreteBertObjective.prepare(data_path, workdir) must load the codebook before init")
        params = dict(super().init(rng, batch))
        values = {"mean": self.codebooks.mean, "std": self.codebooks.std, "centers": self.codebooks.centers[0]}
        front = dict(params["encoder"]["frontend"])
        front.update(rebox({name: front[name] for name in FROZEN}, values))
        params["encoder"] = dict(params["encoder"], frontend=front)
        return params

    def unit_ids(self, params: Any, batch: dict) -> jax.Array:
        """The unit id int32[batch, frames] of every frame (the targets)."""
        frames = self.num_frames(batch["audio"].shape[1])
        m = self.encoder_config
        wavs = jnp.where(batch["audio_mask"], batch["audio"], 0.0)
        _, ids = UnitFrontend(m.units, m.unit_dim, m.downsampling).apply(
            {"params": jax.lax.stop_gradient(params["encoder"]["frontend"])}, wavs, batch["audio_mask"].sum(-1), frames)
        return ids

    def loss(self, params: Any, batch: dict, rng: jax.Array, step, train: bool = True, state: Any = None):
        """Cross-entropy of the masked frames' unit ids.

        Returns:
            (loss, metrics: accuracy, accuracy_unmasked, masked_fraction, masked_frames, and
            NO_GRADIENT holding the codebook; with LayerDrop also dropped_layers).
        """
        k_mask, k_drop = jax.random.split(rng)
        mask = self.draw_mask(batch, k_mask)
        ids = self.unit_ids(params, batch)
        (logits, out), sown = self.apply(params, batch, mask, k_drop, train)
        masked = (mask & out.frame_mask).astype(jnp.float32)
        unmasked = (~mask & out.frame_mask).astype(jnp.float32)
        ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, ids[..., None], -1)[..., 0]
        hit = (jnp.argmax(logits, -1) == ids).astype(jnp.float32)
        n_m, n_u = jnp.maximum(masked.sum(), 1.0), jnp.maximum(unmasked.sum(), 1.0)
        loss = (ce * masked).sum() / n_m
        metrics = {
            "accuracy": (hit * masked).sum() / n_m,
            "accuracy_unmasked": (hit * unmasked).sum() / n_u,
            "masked_fraction": masked.sum() / jnp.maximum(out.frame_mask.sum(), 1),
            "masked_frames": masked.sum(),
        }
        metrics.update(layerdrop_metrics(params, sown))
        no_gradient = metrics.get(NO_GRADIENT) or jax.tree.map(lambda _: jnp.zeros((), bool), params)
        front = dict(no_gradient["encoder"]["frontend"])
        for name in FROZEN:
            front[name] = jnp.ones((), bool)
        no_gradient = dict(no_gradient)
        no_gradient["encoder"] = dict(no_gradient["encoder"], frontend=front)
        metrics[NO_GRADIENT] = no_gradient
        return loss, metrics
