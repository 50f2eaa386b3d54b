"""Autoregressive Predictive Coding: APC (Chung et al., 2019, "An Unsupervised Autoregressive
Model for Speech Representation Learning") and VQ-APC (Chung et al., 2020, "Vector-Quantized
Autoregressive Predictive Coding").

A causal encoder (a unidirectional GRU/LSTM stack, or any causal body of the frame encoder)
reads log-mel frames x_1..x_T; a linear postnet maps its last hidden state at frame t to a
prediction of x_{t+n}, and the loss is the L1 distance, averaged over frames and bands, over
the valid frames t with t + n inside the utterance. VQ-APC is the same objective with a
Gumbel-softmax vector-quantisation layer in the context stack (`model.vq_layer`), which limits
what the encoder can pass on and so keeps the information that predicts the future best; its
temperature decays per update as `objective.gumbel_temperature` (start, floor, decay).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import frame_encoder
from ssl_jax.models.encoder import config_from
from ssl_jax.models.quantizers import gumbel_temperature
from ssl_jax.objectives import Objective, register


def future_l1(pred: jax.Array, x: jax.Array, frame_mask: jax.Array, shift: int) -> tuple[jax.Array, jax.Array]:
    """L1 distance between predictions at t and frames at t + shift.

    Args:
      pred: [batch, frames, dim] predictions; x: [batch, frames, dim] the frames; frame_mask:
        bool[batch, frames] (a prefix); shift: n >= 1.
    Returns:
      (mean absolute error over the pairs with t + n valid and their dims, number of such pairs).
    """
    target = x[:, shift:]
    valid = frame_mask[:, shift:].astype(jnp.float32)[..., None]
    err = jnp.abs(pred[:, : target.shape[1]].astype(jnp.float32) - target.astype(jnp.float32))
    pairs = valid.sum()
    return (err * valid).sum() / jnp.maximum(pairs * x.shape[-1], 1.0), pairs


@register("apc")
class ApcObjective(Objective):
    """APC / VQ-APC from the full config (`model.*` of the frames architecture, `objective.*`).

    Params: `{"encoder", "postnet"}`. Batch: `audio` [batch, samples], `audio_mask`.
    """

    SUMMARY = {"l1": "L1 of frame t+n"}

    def __init__(self, config: Any):
        self.config = config
        self.encoder_config = config_from(config["model"])
        if not isinstance(self.encoder_config, frame_encoder.Config):
            raise ValueError("APC trains the frame encoder: set model.architecture='frames'")
        if self.encoder_config.body == "transformer" or (self.encoder_config.body == "rnn"
                                                         and self.encoder_config.bidirectional) or (
                self.encoder_config.body == "conv" and not self.encoder_config.causal):
            raise ValueError("APC needs a causal body: a unidirectional rnn or a causal conv (model.body, "
                             "model.bidirectional, model.causal)")
        o = config["objective"]
        self.shift = int(o["shift"])
        if self.shift < 1:
            raise ValueError(f"objective.shift (n, frames ahead) must be >= 1, got {self.shift}")
        self.gumbel = tuple(float(v) for v in o["gumbel_temperature"])
        self.encoder = frame_encoder.Encoder(self.encoder_config)
        self.postnet = nn.Dense(self.encoder_config.feature_dim,
                                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", None)),
                                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))
        self.vq = self.encoder_config.vq_layer >= 0
        if self.vq:
            self.SUMMARY = {**self.SUMMARY, "perplexity": "codebook perplexity"}
            self.floors = {"perplexity": 2.0 * self.encoder_config.vq_groups}

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Boxed parameters for a batch of this shape."""
        k_enc, k_post, k_gumbel = jax.random.split(rng, 3)
        enc = self.encoder.init({"params": k_enc, "gumbel": k_gumbel}, batch["audio"], batch["audio_mask"])["params"]
        h = jnp.zeros((1, 1, self.encoder_config.hidden_size), jnp.float32)
        return {"encoder": enc, "postnet": self.postnet.init(k_post, h)["params"]}

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """(L1 loss, metrics: l1 (the loss), perplexity (VQ-APC), masked_frames = predicted frames)."""
        del state
        k_drop, k_gumbel = jax.random.split(rng)
        x, frame_mask, _ = self.encoder.apply({"params": params["encoder"]}, batch["audio"], batch["audio_mask"],
                                              method="features")
        out, sown = self.encoder.apply(
            {"params": params["encoder"]}, x, frame_mask, deterministic=not train,
            vq_temperature=gumbel_temperature(self.gumbel, step), method="body",
            rngs={"dropout": k_drop, "gumbel": k_gumbel} if train else {}, mutable=[frame_encoder.VQ_COLLECTION])
        pred = self.postnet.apply({"params": params["postnet"]}, out.last_hidden_state)
        loss, pairs = future_l1(pred, jax.lax.stop_gradient(x), frame_mask, self.shift)
        metrics = {"l1": loss, "masked_frames": pairs}
        if self.vq:
            metrics["perplexity"] = sown[frame_encoder.VQ_COLLECTION]["vq_perplexity"][0]
        return loss, metrics
