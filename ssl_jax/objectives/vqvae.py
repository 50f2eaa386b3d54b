"""VQ-VAE on log-mel frames (van den Oord et al., 2017, "Neural Discrete Representation
Learning"; for speech, Chorowski et al., 2019, "Unsupervised Speech Representation Learning
Using WaveNet Autoencoders").

The frame encoder (a non-causal conv body in the recipes) reads log-mel frames; a linear
projection gives z [batch, frames, code_dim]; the vector quantiser (models/quantizers.py
`VectorQuantizer`) replaces each z by its nearest codebook entry e with the straight-through
estimator; a decoder (a linear layer, non-causal residual conv layers, a linear layer)
reconstructs the (per-utterance CMVN) front-end frames from the entries. Loss:

  MSE(decoder(z_q), x) + ||sg(z) - e||^2 + beta ||z - sg(e)||^2,   beta = 0.25,

each term a mean over valid frames and dims. `Upstream` reads the encoder's hidden states (the
continuous features before the projection).

Deviations: z is standardised per dimension over each utterance's valid frames (as the CMVN of
the input). Under Adam a codebook entry moves by about lr per update, and an unnormalised
projection outran it: on the tiny recipe, after 150 updates, the codebook loss was 13 per dim
and 5 of the 256 entries were in use (perplexity), against 0.87 and 15 with the
standardisation. The speech VQ-VAEs condition their WaveNet decoders on the speaker (so the
codes need not carry who speaks); this decoder is unconditioned and reconstructs log-mel
frames, not the waveform.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import frame_encoder
from ssl_jax.models.encoder import config_from
from ssl_jax.models.frame_encoder import ConvLayer
from ssl_jax.models.quantizers import VectorQuantizer
from ssl_jax.objectives import Objective, register
from ssl_jax.objectives.ema import instance_norm


def masked_mse(pred: jax.Array, x: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """Mean square error over the valid frames and their dims.

    pred, x: [batch, frames, dim]; frame_mask: bool[batch, frames] -> scalar (0 with no valid frame).
    """
    m = frame_mask[..., None].astype(jnp.float32)
    err = jnp.square(pred.astype(jnp.float32) - x.astype(jnp.float32))
    return (err * m).sum() / jnp.maximum(m.sum() * x.shape[-1], 1.0)


def _dense(features: int, axes: tuple, dtype: Any, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]), name=name)


class Bottleneck(nn.Module):
    """Projection of the encoder output to z (standardised per utterance) and its vector quantiser.

    Attributes: num_codes (K); code_dim (D); dtype.
    """

    num_codes: int
    code_dim: int
    dtype: Any = jnp.float32

    def setup(self):
        self.projection = _dense(self.code_dim, ("embed", "codevector"), self.dtype, "projection")
        # Entries start near the origin, a tenth of z's scale: the first assignments follow z's
        # direction instead of all going to the few shortest entries.
        self.vq = VectorQuantizer(self.num_codes, self.code_dim, init_std=0.1)

    def project(self, h: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """h: [batch, frames, hidden] -> z [batch, frames, code_dim] float32, every dim standardised
        over each utterance's valid frames, 0 on padding."""
        return instance_norm(self.projection(h), frame_mask)

    def quantize(self, z: jax.Array, frame_mask: jax.Array):
        """`VectorQuantizer`'s (quantized, codes, codebook_loss, commitment_loss, perplexity)."""
        return self.vq(z, frame_mask)

    def __call__(self, h: jax.Array, frame_mask: jax.Array):
        """(z, then `quantize`'s five outputs)."""
        z = self.project(h, frame_mask)
        return (z, *self.quantize(z, frame_mask))


class Decoder(nn.Module):
    """Linear -> `num_layers` non-causal residual conv layers -> linear to the frame width.

    Attributes: hidden; out (feature_dim); num_layers; kernel; dtype.
    """

    hidden: int
    out: int
    num_layers: int
    kernel: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, q: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """q: [batch, frames, code_dim] -> reconstruction [batch, frames, out]."""
        h = _dense(self.hidden, ("codevector", "embed"), self.dtype, "input")(q.astype(self.dtype))
        h = jnp.where(frame_mask[..., None], h, 0.0)
        for i in range(self.num_layers):
            h = ConvLayer(self.hidden, self.kernel, False, self.dtype, name=f"conv_{i}")(h, frame_mask)
        return _dense(self.out, ("embed", None), self.dtype, "output")(h)


@register("vqvae")
class VqVaeObjective(Objective):
    """VQ-VAE from the full config (`model.*` of the frames architecture, `objective.*`).

    Params: `{"encoder", "quantizer" {"projection", "vq" {"codebook"}}, "decoder"}`.
    Batch: `audio` [batch, samples], `audio_mask`.
    """

    SUMMARY = {"reconstruction": "reconstruction MSE", "perplexity": "codebook perplexity"}

    def __init__(self, config: Any):
        self.config = config
        self.encoder_config = config_from(config["model"])
        if not isinstance(self.encoder_config, frame_encoder.Config):
            raise ValueError("VQ-VAE trains the frame encoder: set model.architecture='frames'")
        if self.encoder_config.vq_layer >= 0:
            raise ValueError("VQ-VAE quantises after the encoder (objective.num_codes); set model.vq_layer=-1")
        o = config["objective"]
        self.num_codes = int(o["num_codes"])
        self.code_dim = int(o["code_dim"])
        self.beta = float(o["commitment_weight"])
        d = o["decoder"]
        hidden = int(d["hidden_size"]) or self.encoder_config.hidden_size
        if self.num_codes < 2 or self.code_dim < 1:
            raise ValueError(f"objective.num_codes must be >= 2 and code_dim >= 1, got {self.num_codes}, {self.code_dim}")
        if self.beta < 0:
            raise ValueError(f"objective.commitment_weight (beta) must be >= 0, got {self.beta}")
        if int(d["num_layers"]) < 0 or int(d["kernel"]) < 1:
            raise ValueError(f"objective.decoder needs num_layers >= 0 and kernel >= 1, got {d['num_layers']}, {d['kernel']}")
        dtype = jnp.dtype(self.encoder_config.dtype)
        self.encoder = frame_encoder.Encoder(self.encoder_config)
        self.bottleneck = Bottleneck(self.num_codes, self.code_dim, dtype)
        self.decoder = Decoder(hidden, self.encoder_config.feature_dim, int(d["num_layers"]), int(d["kernel"]), dtype)
        # Collapse: every frame on one entry.
        self.floors = {"perplexity": 2.0}

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Boxed parameters for a batch of this shape."""
        k_enc, k_q, k_dec = jax.random.split(rng, 3)
        enc = self.encoder.init({"params": k_enc}, batch["audio"], batch["audio_mask"])["params"]
        mask = jnp.ones((1, 2), bool)
        h = jnp.zeros((1, 2, self.encoder_config.hidden_size), jnp.float32)
        quantizer = self.bottleneck.init(k_q, h, mask)["params"]
        decoder = self.decoder.init(k_dec, jnp.zeros((1, 2, self.code_dim), jnp.float32), mask)["params"]
        return {"encoder": enc, "quantizer": quantizer, "decoder": decoder}

    def encode(self, params: Any, x: jax.Array, frame_mask: jax.Array, rng: jax.Array | None = None,
               train: bool = False) -> tuple[jax.Array, Any]:
        """x: [batch, frames, feature_dim] front-end frames -> (z [batch, frames, code_dim], `EncoderOutput`)."""
        out = self.encoder.apply({"params": params["encoder"]}, x, frame_mask, deterministic=not train,
                                 rngs={"dropout": rng} if train else {}, method="body")
        return self.bottleneck.apply({"params": params["quantizer"]}, out.last_hidden_state, frame_mask,
                                     method="project"), out

    def quantize(self, params: Any, z: jax.Array, frame_mask: jax.Array):
        """`VectorQuantizer`'s (quantized, codes, codebook_loss, commitment_loss, perplexity) of z."""
        return self.bottleneck.apply({"params": params["quantizer"]}, z, frame_mask, method="quantize")

    def decode(self, params: Any, q: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """q: [batch, frames, code_dim] -> reconstruction [batch, frames, feature_dim]."""
        return self.decoder.apply({"params": params["decoder"]}, q, frame_mask)

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """(reconstruction + codebook + beta * commitment, metrics: reconstruction, codebook,
        commitment (unweighted), perplexity, masked_frames = valid frames)."""
        del step, state
        x, frame_mask, _ = self.encoder.apply({"params": params["encoder"]}, batch["audio"], batch["audio_mask"],
                                              method="features")
        x = jax.lax.stop_gradient(x)
        z, _ = self.encode(params, x, frame_mask, rng, train)
        q, _, codebook, commitment, perplexity = self.quantize(params, z, frame_mask)
        reconstruction = masked_mse(self.decode(params, q, frame_mask), x, frame_mask)
        metrics = {"reconstruction": reconstruction, "codebook": codebook, "commitment": commitment,
                   "perplexity": perplexity, "masked_frames": frame_mask.sum().astype(jnp.float32)}
        return reconstruction + codebook + self.beta * commitment, metrics
