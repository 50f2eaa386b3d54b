"""Non-Autoregressive Predictive Coding (Liu, Chung and Glass, 2021, "Non-Autoregressive
Predictive Coding for Learning Speech Representations from Local Dependencies").

The frame encoder's NPC body (`model.body = "npc"`) sums the masked convolutions of its conv
blocks into a feature for every frame t that never sees the input frames within
`npc_mask // 2` of t. A head predicts frame t from that feature alone: optionally a vector
quantiser (G groups, each a Gumbel-softmax codebook of V entries reading its own slice of
hidden_size / G dims, the codevectors concatenated: the paper's 4 x 64), then a linear postnet
to the log-mel bands. The loss is the L1 distance to the (per-utterance CMVN) log-mel frame,
averaged over bands and valid frames. The Gumbel temperature is `objective.vq_temperature`
(constant, 1.0 in the paper); evaluation takes the hard argmax codes. Downstream, `Upstream`
reads the encoder's hidden states, the last one being the masked feature before quantisation.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import frame_encoder
from ssl_jax.models.encoder import config_from
from ssl_jax.objectives import Objective, register
from ssl_jax.objectives.ema import floors_from_config, spread


def masked_l1(pred: jax.Array, x: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """Mean absolute error over the valid frames and their dims.

    pred, x: [batch, frames, dim]; frame_mask: bool[batch, frames] -> scalar (0 with no valid frame).
    """
    m = frame_mask[..., None].astype(jnp.float32)
    err = jnp.abs(pred.astype(jnp.float32) - x.astype(jnp.float32))
    return (err * m).sum() / jnp.maximum(m.sum() * x.shape[-1], 1.0)


class GroupedGumbelQuantizer(nn.Module):
    """NPC's vector quantiser: G groups, group g reading only its own slice of dims.

    Each group maps its slice to V logits (a linear layer initialised with variance 1 / fan-in,
    so the initial code distribution is soft) and picks one of V learned codevectors of the
    slice's width: the argmax in evaluation, a straight-through Gumbel-softmax sample in
    training (Jang et al., 2017). The codevectors of the groups are concatenated. (wav2vec 2.0's
    `GumbelVectorQuantizer` reads every dim for every group and starts with unit-variance logit
    weights, near one-hot codes: on the tiny recipe its perplexity fell from 41 to 7.4 of 256,
    under the collapse floor of 8, within 15 updates.)

    Attributes: groups (G); codes (V per group); dtype.
    """

    groups: int
    codes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, frame_mask: jax.Array, *, temperature: float | jax.Array = 1.0,
                 deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """h: [batch, frames, dim], frame_mask: bool[batch, frames] -> (codevectors [batch, frames,
        dim], perplexity: exp of the entropy of each group's mean soft code distribution over the
        valid frames, summed over groups (G with no valid frame))."""
        g, v = self.groups, self.codes
        b, t, dim = h.shape
        if dim % g:
            raise ValueError(f"hidden size {dim} is not divisible by {g} VQ groups")
        parts = h.reshape(b, t, g, dim // g)
        w = self.param("logit_kernel", nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-2, out_axis=-1, batch_axis=(0,)),
            (None, "codevector", "codebook")), (g, dim // g, v))
        bias = self.param("logit_bias", nn.with_logical_partitioning(nn.initializers.zeros, (None, "codebook")), (g, v))
        logits = (jnp.einsum("btgd,gdv->btgv", parts.astype(self.dtype), w.astype(self.dtype)).astype(jnp.float32)
                  + bias)
        m = frame_mask.astype(jnp.float32)[..., None, None]
        marginal = (jax.nn.softmax(logits, -1) * m).sum((0, 1)) / jnp.maximum(m.sum(), 1.0)  # [G, V]
        perplexity = jnp.exp(-jnp.sum(marginal * jnp.log(marginal + 1e-7), -1)).sum()
        if deterministic:
            onehot = jax.nn.one_hot(jnp.argmax(logits, -1), v, dtype=jnp.float32)
        else:
            noise = jax.random.gumbel(self.make_rng("gumbel"), logits.shape, jnp.float32)
            soft = jax.nn.softmax((logits + noise) / temperature, -1)
            onehot = jax.nn.one_hot(jnp.argmax(soft, -1), v, dtype=jnp.float32) + soft - jax.lax.stop_gradient(soft)
        codebook = self.param("codevectors", nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-2, out_axis=-1, batch_axis=(0,)),
            (None, "codebook", "codevector")), (g, v, dim // g))
        q = jnp.einsum("btgv,gvd->btgd", onehot.astype(self.dtype), codebook.astype(self.dtype))
        return q.reshape(b, t, dim), perplexity


class NpcHead(nn.Module):
    """Optional grouped Gumbel VQ, then the linear postnet.

    Attributes:
      feature_dim: width of a predicted frame (the log-mel bands).
      vq_groups: G quantiser groups (0: no VQ); each reads and replaces hidden_size / G dims.
      vq_codes: V entries per group.
      dtype: compute dtype.
    """

    feature_dim: int
    vq_groups: int = 0
    vq_codes: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, frame_mask: jax.Array, *, temperature: float | jax.Array = 1.0,
                 deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """h: [batch, frames, hidden] masked features, frame_mask: bool[batch, frames] ->
        (prediction [batch, frames, feature_dim], VQ perplexity (0 without VQ))."""
        perplexity = jnp.zeros((), jnp.float32)
        if self.vq_groups:
            h, perplexity = GroupedGumbelQuantizer(self.vq_groups, self.vq_codes, self.dtype, name="vq")(
                h, frame_mask, temperature=temperature, deterministic=deterministic)
        pred = nn.Dense(self.feature_dim, dtype=self.dtype,
                        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", None)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)), name="postnet")(h)
        return pred, perplexity


@register("npc")
class NpcObjective(Objective):
    """NPC from the full config (`model.*` of the frames architecture with `body = "npc"`, `objective.*`).

    Params: `{"encoder", "head" {"vq" (with VQ), "postnet"}}`.
    Batch: `audio` [batch, samples], `audio_mask`.
    """

    SUMMARY = {"pred_std": "prediction spread", "loss": "L1 of frames from their masked context"}

    def __init__(self, config: Any):
        self.config = config
        self.encoder_config = config_from(config["model"])
        if not isinstance(self.encoder_config, frame_encoder.Config) or self.encoder_config.body != "npc":
            raise ValueError("NPC trains the frame encoder's masked-conv body: set model.architecture='frames' "
                             "and model.body='npc'")
        if self.encoder_config.vq_layer >= 0:
            raise ValueError("NPC quantises in its own head (objective.vq_groups); set model.vq_layer=-1")
        o = config["objective"]
        self.vq_groups = int(o["vq_groups"])
        self.vq_codes = int(o["vq_codes"])
        self.temperature = float(o["vq_temperature"])
        hidden = self.encoder_config.hidden_size
        if self.vq_groups < 0 or (self.vq_groups and (hidden % self.vq_groups or self.vq_codes < 2)):
            raise ValueError(f"objective.vq_groups must be 0 (no VQ) or divide model.hidden_size ({hidden}), with "
                             f"objective.vq_codes >= 2; got {self.vq_groups} groups of {self.vq_codes}")
        if self.temperature <= 0:
            raise ValueError(f"objective.vq_temperature must be positive, got {self.temperature}")
        self.encoder = frame_encoder.Encoder(self.encoder_config)
        self.head = NpcHead(self.encoder_config.feature_dim, self.vq_groups, self.vq_codes,
                            jnp.dtype(self.encoder_config.dtype))
        # Collapse: the prediction spread (about 1 for CMVN frames, 0 when every frame gets the
        # mean) and, with VQ, one code per group.
        self.floors = floors_from_config(o)
        if self.vq_groups:
            self.SUMMARY = {**self.SUMMARY, "perplexity": "codebook perplexity"}
            self.floors["perplexity"] = 2.0 * self.vq_groups

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Boxed parameters for a batch of this shape."""
        k_enc, k_head = jax.random.split(rng)
        enc = self.encoder.init({"params": k_enc}, batch["audio"], batch["audio_mask"])["params"]
        h = jnp.zeros((1, 1, self.encoder_config.hidden_size), jnp.float32)
        return {"encoder": enc, "head": self.head.init(k_head, h, jnp.ones((1, 1), bool))["params"]}

    def predict(self, params: Any, x: jax.Array, frame_mask: jax.Array, rng: jax.Array | None = None,
                train: bool = False) -> tuple[jax.Array, jax.Array, Any]:
        """Predictions of the frames x from their masked context.

        Args:
          x: [batch, frames, feature_dim] front-end frames; frame_mask: bool[batch, frames].
          rng: dropout and Gumbel noise (train only).
        Returns:
          (prediction [batch, frames, feature_dim], VQ perplexity, the encoder's `EncoderOutput`).
        """
        k_drop, k_gumbel = jax.random.split(rng) if train else (None, None)
        out = self.encoder.apply({"params": params["encoder"]}, x, frame_mask, deterministic=not train,
                                 rngs={"dropout": k_drop} if train else {}, method="body")
        pred, perplexity = self.head.apply({"params": params["head"]}, out.last_hidden_state, frame_mask,
                                           temperature=self.temperature, deterministic=not train,
                                           rngs={"gumbel": k_gumbel} if train else {})
        return pred, perplexity, out

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """(L1 loss, metrics: pred_std* (spread of the predictions over valid frames), perplexity
        (with VQ), masked_frames = valid frames)."""
        del step, state
        x, frame_mask, _ = self.encoder.apply({"params": params["encoder"]}, batch["audio"], batch["audio_mask"],
                                              method="features")
        x = jax.lax.stop_gradient(x)
        pred, perplexity, _ = self.predict(params, x, frame_mask, rng, train)
        metrics = {"masked_frames": frame_mask.sum().astype(jnp.float32), **spread(pred, frame_mask, prefix="pred")}
        if self.vq_groups:
            metrics["perplexity"] = perplexity
        return masked_l1(pred, x, frame_mask), metrics
