"""wav2vec 2.0 contrastive pretraining (Baevski et al., 2020, Sec. 3).

Spans of the projected conv features are replaced by a learned mask embedding; the
Transformer output at each masked frame must pick the quantized target of that frame out of
K distractors sampled from other masked frames of the same utterance (cosine similarity
over temperature kappa). The quantizer reads the unmasked features through their own dropout
(`model.feat_quantizer_dropout`), and its codebook perplexity, hence the diversity term, is
taken over the masked frames only, as in the reference (fairseq's `Wav2Vec2Model.forward`
quantizes `unmasked_features[mask_indices]`). The loss adds the L2 feature penalty; every term
counts valid frames only. Layers that LayerDrop skipped are reported under
`optimizer.NO_GRADIENT`, so the train step leaves them and their Adam moments untouched.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models import quantizers
from ssl_jax.models.transformer import LAYERDROP_COLLECTION
from ssl_jax.objectives import accuracy_floor, layerdrop_metrics, masking, register
from ssl_jax.objectives.masked import MaskedObjective
from ssl_jax.objectives.vectors import l2_normalize


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    try:
        return cfg[key]
    except (KeyError, AttributeError):
        return default


class Wav2Vec2Pretraining(nn.Module):
    """Encoder, Gumbel quantizer and the two projections into the shared similarity space.

    Attributes:
        model: the `ssl_jax.models.encoder.EncoderConfig`.
    """

    model: Any

    def setup(self):
        from ssl_jax.models.encoder import SpeechEncoder
        from ssl_jax.models.quantizers import GumbelVectorQuantizer

        m = self.model
        self.encoder = SpeechEncoder(m)
        self.quantizer = GumbelVectorQuantizer(m.num_codevector_groups, m.num_codevectors_per_group, m.codevector_dim)
        self.quantizer_dropout = nn.Dropout(m.feat_quantizer_dropout)
        init = nn.initializers.lecun_normal()
        self.project_q = nn.Dense(
            m.proj_codevector_dim,
            kernel_init=nn.with_logical_partitioning(init, ("codevector", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        )
        self.project_hid = nn.Dense(
            m.proj_codevector_dim,
            kernel_init=nn.with_logical_partitioning(init, ("embed", "codevector")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("codevector",)),
        )

    def __call__(self, wavs, audio_mask, mask_time_indices, *, temperature, deterministic: bool):
        """Runs the pretraining model.

        Args:
            wavs: f32[batch, samples]; audio_mask: bool[batch, samples].
            mask_time_indices: bool[batch, frames] frames to replace by the mask embedding.
            temperature: Gumbel-softmax temperature (scalar).
            deterministic: no dropout, hard codes.
        Returns:
            dict with `context` [batch, frames, proj] (projected Transformer output),
            `targets` [batch, frames, proj] (projected codevectors), `frame_mask`
            bool[batch, frames], `perplexity` (of the soft code distribution over the masked
            valid frames) and `feature_penalty` scalars.
        """
        out = self.encoder(wavs, audio_mask, mask_time_indices=mask_time_indices, deterministic=deterministic)
        # Only the quantizer's input gets this dropout; the Transformer's input has its own
        # (feat_proj_dropout), as fairseq's dropout_features / dropout_input.
        features = self.quantizer_dropout(out.features, deterministic=deterministic)
        codevectors, perplexity = self.quantizer(
            features, out.frame_mask & mask_time_indices, temperature=temperature, deterministic=deterministic
        )
        return {
            "context": self.project_hid(out.last_hidden_state),
            "targets": self.project_q(codevectors),
            "frame_mask": out.frame_mask,
            "perplexity": perplexity,
            "feature_penalty": out.feature_penalty,
        }


def contrastive_logits(context, targets, neg_idx, *, kappa: float, cross_idx=None):
    """Cosine-similarity logits of the positive (column 0) and the distractors.

    Args:
        context: [batch, frames, d]; targets: [batch, frames, d].
        neg_idx: int[batch, frames, K] frame indices into the same utterance.
        kappa: temperature.
        cross_idx: optional int[batch, frames, Kc] indices into the flattened batch frames.
    Returns:
        f32[batch, frames, 1 + K (+ Kc)] logits; a distractor identical to the positive
        target gets -inf, as in the reference implementation.
    """
    c = context.astype(jnp.float32)
    q = targets.astype(jnp.float32)
    c, q = l2_normalize(c), l2_normalize(q)
    # One [frames, frames] similarity matrix per utterance, then gathers: far cheaper than
    # gathering K target vectors per frame.
    sim = jnp.einsum("btd,bsd->bts", c, q)
    same = jnp.einsum("btd,bsd->bts", jax.lax.stop_gradient(q), jax.lax.stop_gradient(q))
    pos = jnp.diagonal(sim, axis1=1, axis2=2)[..., None]
    neg = jnp.take_along_axis(sim, neg_idx, axis=2)
    neg_is_pos = jnp.take_along_axis(same, neg_idx, axis=2) >= 1.0 - 1e-6
    parts, blocked = [neg], [neg_is_pos]
    if cross_idx is not None:
        b, t, d = q.shape
        q_flat = q.reshape(b * t, d)
        qn = q_flat[cross_idx]  # [batch, frames, Kc, d]
        parts.append(jnp.einsum("btd,btkd->btk", c, qn))
        blocked.append(jnp.einsum("btd,btkd->btk", jax.lax.stop_gradient(q), jax.lax.stop_gradient(qn)) >= 1.0 - 1e-6)
    neg = jnp.concatenate(parts, -1)
    neg = jnp.where(jnp.concatenate(blocked, -1), -jnp.inf, neg)
    return jnp.concatenate([pos, neg], -1) / kappa


@register("wav2vec2")
class Wav2Vec2Objective(MaskedObjective):
    """The wav2vec 2.0 objective built from the full config (`model.*`, `objective.*`).

    Params: `{"encoder": ..., "quantizer": ..., "project_q": ..., "project_hid": ...}`.
    Batch: `audio` f32[batch, samples], `audio_mask` bool[batch, samples]; optional
    `mask_time_indices` bool[batch, frames] and `negative_indices` int[batch, frames, K] fix
    the masks and distractors (tests); otherwise both are drawn from the step key.
    """

    SUMMARY = {"accuracy": "contrastive accuracy", "perplexity": "codebook perplexity"}

    def __init__(self, config: Any):
        super().__init__(config)
        o = config["objective"]
        self.num_negatives = int(o["num_negatives"])
        self.cross_sample_negatives = int(_get(o, "cross_sample_negatives", 0))
        self.kappa = float(o["temperature"])
        self.diversity_weight = float(o["diversity_weight"])
        self.feature_penalty_weight = float(o["feature_penalty_weight"])
        self.gumbel = tuple(float(x) for x in o["gumbel_temperature"])
        self.module = Wav2Vec2Pretraining(self.encoder_config)
        m = self.encoder_config
        self.num_codes = int(m.num_codevector_groups * m.num_codevectors_per_group)
        # Collapse: one code per group, or picking the positive no better than chance.
        self.floors = {"perplexity": 2.0 * m.num_codevector_groups,
                       **accuracy_floor(1.0 / (1 + self.num_negatives + self.cross_sample_negatives))}

    def gumbel_temperature(self, step) -> jax.Array:
        return quantizers.gumbel_temperature(self.gumbel, step)

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Parameters (boxed with logical axis names) for a batch of this shape (the module
        also takes the Gumbel temperature and key, so this is not `MaskedObjective.init`)."""
        k_params, k_mask, k_gumbel, k_drop = jax.random.split(rng, 4)
        frames = self.num_frames(batch["audio"].shape[1])
        mask = jnp.zeros((batch["audio"].shape[0], frames), bool)
        variables = self.module.init(
            {"params": k_params, "gumbel": k_gumbel, "dropout": k_drop},
            batch["audio"],
            batch["audio_mask"],
            mask,
            temperature=self.gumbel[0],
            deterministic=True,
        )
        return variables["params"]

    def masks_and_negatives(self, batch: dict, rng: jax.Array):
        """(mask bool[batch, frames], neg_idx int[batch, frames, K], cross_idx or None) for `batch`."""
        k_mask, k_neg, k_cross = jax.random.split(rng, 3)
        mask = self.draw_mask(batch, k_mask)
        if "negative_indices" in batch:
            neg_idx = jnp.asarray(batch["negative_indices"], jnp.int32)
        else:
            neg_idx, _ = masking.sample_negatives(k_neg, mask, self.num_negatives)
        cross_idx = None
        if self.cross_sample_negatives > 0:
            cross_idx = masking.sample_cross_negatives(k_cross, mask, self.cross_sample_negatives)
        return mask, neg_idx, cross_idx

    def loss(self, params: Any, batch: dict, rng: jax.Array, step, train: bool = True, state: Any = None):
        """Contrastive + alpha * diversity + feature-penalty weight * feature penalty.

        Returns:
            (loss scalar, metrics dict: contrastive, diversity, feature_penalty, accuracy,
             perplexity, gumbel_temperature, masked_fraction, masked_frames; with LayerDrop
             active also dropped_layers and `NO_GRADIENT`, the tree of parameters of the
             skipped layers).
        """
        k_mask, k_gumbel, k_drop = jax.random.split(rng, 3)
        mask, neg_idx, cross_idx = self.masks_and_negatives(batch, k_mask)
        temperature = self.gumbel_temperature(step)
        out, sown = self.module.apply(
            {"params": params},
            batch["audio"],
            batch["audio_mask"],
            mask,
            temperature=temperature,
            deterministic=not train,
            rngs={"gumbel": k_gumbel, "dropout": k_drop},
            mutable=[LAYERDROP_COLLECTION],
        )
        mask = mask & out["frame_mask"]
        # A frame needs two masked frames in its utterance to have a distractor.
        count = mask.sum(-1)
        weight = (mask & (count >= 2)[:, None]).astype(jnp.float32)
        logits = contrastive_logits(out["context"], out["targets"], neg_idx, kappa=self.kappa, cross_idx=cross_idx)
        ce = jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]
        denom = jnp.maximum(weight.sum(), 1.0)
        contrastive = (ce * weight).sum() / denom
        correct = logits[..., 0] > jnp.max(logits[..., 1:], axis=-1)
        accuracy = (correct * weight).sum() / denom
        perplexity = out["perplexity"]
        diversity = (self.num_codes - perplexity) / self.num_codes
        feature_penalty = out["feature_penalty"]
        loss = contrastive + self.diversity_weight * diversity + self.feature_penalty_weight * feature_penalty
        valid_frames = jnp.maximum(out["frame_mask"].sum(), 1)
        metrics = {
            "contrastive": contrastive,
            "diversity": diversity,
            "feature_penalty": feature_penalty,
            "accuracy": accuracy,
            "perplexity": perplexity,
            "gumbel_temperature": temperature,
            "masked_fraction": mask.sum() / valid_frames,
            "masked_frames": weight.sum(),
        }
        metrics.update(layerdrop_metrics(params, sown))
        return loss, metrics
