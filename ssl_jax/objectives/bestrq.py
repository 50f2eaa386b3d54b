"""BEST-RQ: masked prediction of random-projection quantizer codes (Chiu et al., 2022, Sec. 2).

Targets need no training and no k-means: each encoder frame's stacked log-mel features,
standardised per utterance, are multiplied by a frozen random (Xavier-initialised) matrix and
matched to the nearest of a frozen random codebook's unit vectors (cosine, i.e. l2-normalised
both sides); `num_codebooks` independent pairs give several target sets. The encoder reads the
same log-mel frames (`model.frontend = "logmel"`), masked spans get the mask embedding, and a
softmax layer per codebook predicts the masked frames' codes (cross-entropy on masked valid
frames). The projection and codebooks live in the objective's non-gradient state, drawn from
the run's seed, so they are sharded, checkpointed and restored with the run.

Deviation: the paper masks the input features with noise (std 0.1) before a Conformer; here
masked frames get the learned mask embedding after the feature projection, as the other
masked-prediction objectives of this package do.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.frontends import LogMelFrontend
from ssl_jax.objectives import accuracy_floor, layerdrop_metrics, register
from ssl_jax.objectives.masked import MaskedObjective
from ssl_jax.objectives.vectors import l2_normalize


class CodePredictionModel(nn.Module):
    """Encoder and one softmax layer [dim -> codebook_size] per codebook."""

    model: Any
    num_codebooks: int
    codebook_size: int

    @nn.compact
    def __call__(self, wavs, audio_mask, mask_time_indices, *, deterministic: bool):
        """Returns (logits f32[codebooks, batch, frames, codebook_size], EncoderOutput)."""
        from ssl_jax.models.encoder import SpeechEncoder

        out = SpeechEncoder(self.model, name="encoder")(
            wavs, audio_mask, mask_time_indices=mask_time_indices, deterministic=deterministic
        )
        logits = nn.DenseGeneral(
            (self.num_codebooks, self.codebook_size),
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", None, "vocab")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None, "vocab")),
            name="heads",
        )(out.last_hidden_state)
        return jnp.moveaxis(logits.astype(jnp.float32), 2, 0), out


def quantize(frames: jax.Array, valid: jax.Array, projection: jax.Array, codebooks: jax.Array) -> jax.Array:
    """Code ids int32[codebooks, batch, frames] of `frames` [batch, frames, dim].

    Frames are standardised per utterance and dimension over `valid` bool[batch, frames], then
    for each codebook projected by `projection` [codebooks, dim, code_dim] and matched by
    cosine to `codebooks` [codebooks, size, code_dim].
    """
    x = frames.astype(jnp.float32)
    v = valid[..., None].astype(jnp.float32)
    count = jnp.maximum(v.sum(1, keepdims=True), 1.0)
    mean = (x * v).sum(1, keepdims=True) / count
    var = (jnp.square(x - mean) * v).sum(1, keepdims=True) / count
    x = (x - mean) * jax.lax.rsqrt(var + 1e-5)
    proj = jnp.einsum("btd,cde->cbte", x, projection)
    proj, books = l2_normalize(proj), l2_normalize(codebooks)
    return jnp.argmax(jnp.einsum("cbte,cke->cbtk", proj, books), axis=-1).astype(jnp.int32)


@register("bestrq")
class BestRqObjective(MaskedObjective):
    """BEST-RQ from the full config (`model.*` with the log-mel front end, `objective.*`).

    Params: `{"encoder", "heads"}`. State: `{"projection", "codebooks"}`.
    Batch: `audio`, `audio_mask`; optional `mask_time_indices` fixes the mask (tests).
    """

    SUMMARY = {"accuracy": "masked code accuracy"}

    def __init__(self, config: Any):
        super().__init__(config)
        m = self.encoder_config
        if m.frontend != "logmel":
            raise ValueError("BEST-RQ quantizes log-mel frames: set model.frontend='logmel'")
        o = config["objective"]
        self.num_codebooks = int(o["num_codebooks"])
        self.codebook_size = int(o["codebook_size"])
        self.floors = accuracy_floor(1.0 / self.codebook_size)
        self.code_dim = int(o["code_dim"])
        self.frontend = LogMelFrontend(m.logmel_bins, m.logmel_window, m.logmel_hop, m.logmel_stack, "none")
        self.module = CodePredictionModel(m, self.num_codebooks, self.codebook_size)

    def init_state(self, rng: jax.Array, batch: dict) -> Any:
        """The frozen quantizer: Xavier-uniform projections and standard-normal codebooks."""
        dim = self.encoder_config.logmel_bins * self.encoder_config.logmel_stack
        k_proj, k_book = jax.random.split(rng)
        init = nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))
        return {
            "projection": init(k_proj, (self.num_codebooks, dim, self.code_dim), jnp.float32),
            "codebooks": jax.random.normal(k_book, (self.num_codebooks, self.codebook_size, self.code_dim), jnp.float32),
        }

    def target_ids(self, state: Any, batch: dict) -> jax.Array:
        """Code ids int32[codebooks, batch, frames]."""
        wavs = jnp.where(batch["audio_mask"], batch["audio"], 0.0)
        frames, n = self.frontend.apply({}, wavs, batch["audio_mask"].sum(-1))
        valid = jnp.arange(frames.shape[1])[None, :] < n[:, None]
        return quantize(frames, valid, state["projection"], state["codebooks"])

    def loss(self, params: Any, batch: dict, rng: jax.Array, step, train: bool = True, state: Any = None):
        """Cross-entropy of every codebook's code on masked valid frames (mean over codebooks).

        Returns:
            (loss, metrics: accuracy (masked frames, all codebooks), codes_used (distinct codes
            of the first codebook in the batch), masked_fraction, masked_frames).
        """
        k_mask, k_drop = jax.random.split(rng)
        mask = self.draw_mask(batch, k_mask)
        ids = self.target_ids(state, batch)
        (logits, out), sown = self.apply(params, batch, mask, k_drop, train)
        w = (mask & out.frame_mask).astype(jnp.float32)
        denom = jnp.maximum(w.sum(), 1.0)
        ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, ids[..., None], -1)[..., 0]
        loss = (ce * w).sum() / (denom * self.num_codebooks)
        hit = (jnp.argmax(logits, -1) == ids).astype(jnp.float32)
        used = jnp.zeros((self.codebook_size,), jnp.float32).at[ids[0].reshape(-1)].max(
            out.frame_mask.reshape(-1).astype(jnp.float32))
        metrics = {
            "accuracy": (hit * w).sum() / (denom * self.num_codebooks),
            "codes_used": used.sum(),
            "masked_fraction": w.sum() / jnp.maximum(out.frame_mask.sum(), 1),
            "masked_frames": w.sum(),
        }
        metrics.update(layerdrop_metrics(params, sown))
        return loss, metrics
