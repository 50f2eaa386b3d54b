"""DeCoAR 2.0 (Ling & Liu, 2020, "DeCoAR 2.0: Deep Contextualized Acoustic Representations with
Vector Quantization", arXiv:2012.06659).

A Transformer encoder reads log-mel frames (100 Hz, per-utterance CMVN) under wav2vec 2.0's span
masking (`masking.span_mask`; masked frames replaced by a learned mask vector); a Gumbel product
quantiser (G codebooks of V entries, models/quantizers.py; straight-through hard codes in
training, argmax in evaluation) sits between the encoder's output and the reconstruction head,
which reconstructs the masked frames (objectives/reconstruction.py's head and L1). Loss: L1 +
alpha x wav2vec 2.0's diversity term (G V - perplexity) / (G V), the perplexity of the soft code
distribution over the masked valid frames; the Gumbel temperature decays per update as wav2vec
2.0's. Downstream, `Upstream` reads the encoder, whose last hidden state is the representation
before quantisation.

Deviations: the mask vector replaces the log-mel frame before the input projection (wav2vec 2.0
replaces the projected feature); the head is Mockingjay's two-layer head and reconstructs each
masked frame itself; the quantiser reads the encoder's output times hidden_size^vq_input_power
(-0.25 in the recipes; 0 reads it as it is). Through wav2vec 2.0's N(0, 1) projection a
LayerNorm output of d dims gives code logits of std sqrt(d) (11 at d = 128, 28 at d = 768):
the masked frames, which all start from the same mask vector, pick one code per group, the
softmax saturates, and neither the straight-through nor the diversity gradient moves them. At
std d^(1/4) the codes follow the logits through the Gumbel noise and the softmax stays soft;
at std 1 the noise drowns them. Measured with configs/decoar2_tiny.py, 150 updates (eval L1;
predicting the mean frame gives about 0.80): power 0 collapsed to perplexity 2 of 128 within 5
updates, every prediction the mean frame (in a 30-update run); -0.5 kept the perplexity at 127 but reached only
0.794 with the prediction spread falling to 0.13; -0.25 reached 0.729 at perplexity 61 (the
same encoder and masking without the quantiser: 0.681).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import quantizers
from ssl_jax.models.quantizers import GumbelVectorQuantizer
from ssl_jax.objectives import masking, register
from ssl_jax.objectives.reconstruction import MaskedReconstruction


@register("decoar2")
class DeCoAR2(MaskedReconstruction):
    """DeCoAR 2.0 from the full config: `objective.mask_prob`, `.mask_length`, `.min_masks`
    (wav2vec 2.0 span masking), `.vq_groups`, `.vq_codes`, `.vq_input_power` (module docstring),
    `.diversity_weight` (alpha), `.gumbel_temperature` (start, floor, decay per update) and
    optional `.collapse.pred_std`.

    Params: `{"encoder", "head", "quantizer", "mask_embedding"}`.
    """

    SUMMARY = {"l1": "L1 reconstruction", "perplexity": "codebook perplexity"}

    def __init__(self, config: Any):
        super().__init__(config)
        o = config["objective"]
        self.mask_prob = float(o["mask_prob"])
        self.mask_length = int(o["mask_length"])
        self.min_masks = int(o["min_masks"])
        self.vq_groups = int(o["vq_groups"])
        self.vq_codes = int(o["vq_codes"])
        self.vq_input_power = float(o["vq_input_power"])
        self.diversity_weight = float(o["diversity_weight"])
        self.gumbel = tuple(float(v) for v in o["gumbel_temperature"])
        hidden = self.encoder_config.hidden_size
        if self.vq_groups < 1 or hidden % self.vq_groups or self.vq_codes < 2:
            raise ValueError(f"objective.vq_groups must divide model.hidden_size ({hidden}) and objective.vq_codes "
                             f"be >= 2; got {self.vq_groups} groups of {self.vq_codes}")
        if len(self.gumbel) != 3 or min(self.gumbel) <= 0:
            raise ValueError(f"objective.gumbel_temperature must be (start, floor, decay), all positive; "
                             f"got {self.gumbel}")
        if self.mask_prob < 0 or self.mask_length < 1 or self.min_masks < 0:
            raise ValueError(f"objective.mask_prob and min_masks must be >= 0 and mask_length >= 1; got "
                             f"{self.mask_prob}, {self.min_masks}, {self.mask_length}")
        self.quantizer = GumbelVectorQuantizer(self.vq_groups, self.vq_codes, hidden, self.dtype)
        self.num_codes = self.vq_groups * self.vq_codes
        # Collapse: one code per group.
        self.floors = {"perplexity": 2.0 * self.vq_groups, **self.floors}

    def extra_params(self, rng: jax.Array) -> dict:
        """The quantiser and the learned mask vector (a log-mel frame, [feature_dim])."""
        k_q, k_m = jax.random.split(rng)
        h = jnp.zeros((1, 1, self.encoder_config.hidden_size), jnp.float32)
        q = self.quantizer.init({"params": k_q}, h, jnp.ones((1, 1), bool))["params"]
        init = nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("conv_channels",))
        return {"quantizer": q, "mask_embedding": init(k_m, (self.encoder_config.feature_dim,), jnp.float32)}

    def gumbel_temperature(self, step: Any) -> jax.Array:
        """max(start * decay^step, floor)."""
        return quantizers.gumbel_temperature(self.gumbel, step)

    def alter(self, params: Any, x: jax.Array, frame_mask: jax.Array, rng: jax.Array):
        """Span masks over the valid frames; masked frames become the mask vector."""
        mask = masking.span_mask(rng, frame_mask.sum(-1), x.shape[1], mask_prob=self.mask_prob,
                                 mask_length=self.mask_length, min_masks=self.min_masks) & frame_mask
        out = jnp.where(mask[..., None], params["mask_embedding"].astype(x.dtype), x)
        valid = jnp.maximum(frame_mask.sum(), 1).astype(jnp.float32)
        return out, jnp.broadcast_to(mask[..., None], x.shape), mask, {"time_fraction": mask.sum() / valid}

    def decode(self, params: Any, out: Any, chosen: jax.Array, rng: jax.Array, step: Any, train: bool):
        """Quantises the encoder's output (scaled, module docstring; perplexity over the masked
        valid frames), then the head."""
        temperature = self.gumbel_temperature(step)
        h = out.last_hidden_state * (self.encoder_config.hidden_size ** self.vq_input_power)
        q, perplexity = self.quantizer.apply({"params": params["quantizer"]}, h,
                                             chosen & out.frame_mask, temperature=temperature,
                                             deterministic=not train, rngs={"gumbel": rng} if train else {})
        pred = self.head.apply({"params": params["head"]}, q)
        diversity = (self.num_codes - perplexity) / self.num_codes
        metrics = {"diversity": diversity, "perplexity": perplexity, "gumbel_temperature": temperature}
        return pred, self.diversity_weight * diversity, metrics
