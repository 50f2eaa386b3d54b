"""HuBERT masked prediction (Hsu et al., 2021, "HuBERT", Sec. II).

Spans of the projected features are replaced by the mask embedding; at every masked frame the
Transformer output, projected to `final_dim`, scores each cluster of each target set by cosine
similarity with a learned cluster embedding over temperature 0.1, and the loss is the
cross-entropy against the frame's cluster id (mean over masked valid frames; unmasked frames
weighted by `objective.unmasked_weight`, 0 in the paper), plus the feature penalty.

Targets come from frozen k-means codebooks held in the objective's non-gradient state and are
computed inside the step from the same batch (`objectives.targets`): MFCC frames (iteration
1) or a frozen previous model's layer (iteration 2+), standardised and assigned to the nearest
center. `prepare` loads the codebooks, or fits them first (`ssl_jax.cluster`) and caches them
beside the corpus, so a recipe trains on a fresh corpus with nothing run before it.
"""

from __future__ import annotations

import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import kmeans
from ssl_jax.objectives import accuracy_floor, layerdrop_metrics, register, targets
from ssl_jax.objectives.masked import MaskedObjective, rebox
from ssl_jax.objectives.vectors import l2_normalize

log = logging.getLogger(__name__)


class MaskedPredictionModel(nn.Module):
    """Encoder, final projection and one embedding table per target set.

    Attributes:
        model: the `EncoderConfig`.
        final_dim: projection size of the scoring space.
        num_classes: clusters of each target set.
        untie: one projection per target set (else one shared).
    """

    model: Any
    final_dim: int
    num_classes: tuple[int, ...]
    untie: bool = False

    @nn.compact
    def __call__(self, wavs, audio_mask, mask_time_indices, *, deterministic: bool):
        """Returns (per target set the projected output [batch, frames, final_dim], per set the
        label embeddings [k_i, final_dim], EncoderOutput)."""
        from ssl_jax.models.encoder import SpeechEncoder

        out = SpeechEncoder(self.model, name="encoder")(
            wavs, audio_mask, mask_time_indices=mask_time_indices, deterministic=deterministic
        )
        sets = len(self.num_classes)
        proj = nn.Dense(
            self.final_dim * (sets if self.untie else 1),
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "codevector")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("codevector",)),
            name="final_proj",
        )(out.last_hidden_state)
        projs = tuple(jnp.split(proj, sets, axis=-1)) if self.untie else (proj,) * sets
        embeddings = tuple(
            self.param(
                f"label_embeddings_{i}",
                nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("vocab", "codevector")),
                (k, self.final_dim),
            )
            for i, k in enumerate(self.num_classes)
        )
        return projs, embeddings, out


def cosine_logits(x: jax.Array, embeddings: jax.Array, temperature: float) -> jax.Array:
    """Cosine similarity of `x` [batch, frames, d] with every row of `embeddings` [k, d] over
    `temperature`: [batch, frames, k]."""
    x = x.astype(jnp.float32)
    e = embeddings.astype(jnp.float32)
    x, e = l2_normalize(x), l2_normalize(e)
    return jnp.einsum("btd,kd->btk", x, e) / temperature


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    try:
        return cfg[key]
    except (KeyError, AttributeError):
        return default


@register("hubert")
class HubertObjective(MaskedObjective):
    """HuBERT from the full config (`model.*`, `objective.*`, `objective.targets.*`).

    Params: `{"encoder", "final_proj", "label_embeddings_<i>"}`. State: `{"mean", "std",
    "centers_<i>"}` and, for layer targets, `{"teacher"}` (the frozen encoder).
    Batch: `audio`, `audio_mask`; optional `clean_audio` (the crops before augmentation,
    `data.augment.clean_copy`) gives the targets, `mask_time_indices` fixes the mask (tests)
    and `target_ids_<i>` int[batch, frames] the targets.
    """

    SUMMARY = {"accuracy": "masked-prediction accuracy", "accuracy_unmasked": "unmasked accuracy"}

    def __init__(self, config: Any):
        super().__init__(config)
        o = config["objective"]
        self.temperature = float(o["logit_temperature"])
        self.unmasked_weight = float(o["unmasked_weight"])
        self.feature_penalty_weight = float(o["feature_penalty_weight"])
        t = o["targets"]
        self.source = str(t["source"])
        if self.source not in ("mfcc", "layer"):
            raise ValueError(f"objective.targets.source must be 'mfcc' or 'layer', got {self.source!r}")
        self.num_classes = tuple(int(k) for k in t["num_clusters"])
        self.floors = accuracy_floor(sum(1.0 / k for k in self.num_classes) / len(self.num_classes))
        if not self.num_classes or min(self.num_classes) < 2:
            raise ValueError(f"objective.targets.num_clusters must list sizes >= 2, got {t['num_clusters']}")
        self.layer = int(_get(t, "layer", 0))
        self.module = MaskedPredictionModel(
            self.encoder_config, int(o["final_dim"]), self.num_classes, bool(_get(o, "untie_final_proj", False))
        )
        self.codebooks: kmeans.Codebooks | None = None
        self.teacher = None  # (EncoderConfig, host params) for layer targets

    # -- targets

    def prepare(self, data_path: str, workdir: str) -> None:
        """Loads the codebooks (and the teacher for layer targets), fitting them first when the
        config names none (`ssl_jax.cluster.ensure_codebooks`)."""
        from ssl_jax import cluster

        self.codebooks = cluster.ensure_codebooks(self.config, data_path, workdir)
        if self.codebooks.sizes != self.num_classes:
            raise ValueError(
                f"the codebooks have {self.codebooks.sizes} clusters, objective.targets.num_clusters asks for {self.num_classes}"
            )
        if self.source == "layer":
            self.teacher = cluster.load_teacher(self.config)

    def feature_frames(self, state: Any, wavs: jax.Array, audio_mask: jax.Array) -> jax.Array:
        """The frames targets are clustered from, [batch, frames, dim], standardised."""
        features = targets.from_config(self.config, self.teacher[0] if self.teacher is not None else None)
        f, _ = features(wavs, audio_mask, state.get("teacher"))
        return (f - state["mean"]) / state["std"]

    def target_ids(self, state: Any, batch: dict) -> list[jax.Array]:
        """Cluster ids int32[batch, frames] of every target set (or the batch's `target_ids_<i>`)."""
        if all(f"target_ids_{i}" in batch for i in range(len(self.num_classes))):
            return [jnp.asarray(batch[f"target_ids_{i}"], jnp.int32) for i in range(len(self.num_classes))]
        source = batch["clean_audio"] if "clean_audio" in batch else batch["audio"]
        wavs = jnp.where(batch["audio_mask"], source, 0.0)
        f = self.feature_frames(state, wavs, batch["audio_mask"])
        b, t, d = f.shape
        return [kmeans.assign(f.reshape(b * t, d), state[f"centers_{i}"])[0].reshape(b, t) for i in range(len(self.num_classes))]

    # -- the Objective interface

    def init_state(self, rng: jax.Array, batch: dict) -> Any:
        if self.codebooks is None:
            raise RuntimeError("HubertObjective.prepare(data_path, workdir) must load the codebooks before init_state")
        state = {"mean": jnp.asarray(self.codebooks.mean), "std": jnp.asarray(self.codebooks.std)}
        for i, c in enumerate(self.codebooks.centers):
            state[f"centers_{i}"] = jnp.asarray(c)
        if self.source == "layer":
            from ssl_jax.models.encoder import SpeechEncoder

            cfg, params = self.teacher
            boxed = jax.eval_shape(
                lambda: SpeechEncoder(cfg).init(jax.random.key(0), batch["audio"], batch["audio_mask"])["params"]
            )
            state["teacher"] = rebox(boxed, params)
        return state

    def loss(self, params: Any, batch: dict, rng: jax.Array, step, train: bool = True, state: Any = None):
        """Cross-entropy on masked frames (+ unmasked weight x on unmasked) + feature penalty.

        Returns:
            (loss, metrics: loss_masked, loss_unmasked, accuracy (masked frames, first target
            set), accuracy_unmasked, accuracy_<i> per set beyond the first, feature_penalty,
            masked_fraction, masked_frames; with LayerDrop also dropped_layers and NO_GRADIENT).
        """
        k_mask, k_drop = jax.random.split(rng)
        mask = self.draw_mask(batch, k_mask)
        ids = self.target_ids(state, batch)
        (projs, embeddings, out), sown = self.apply(params, batch, mask, k_drop, train)
        valid = out.frame_mask
        masked = (mask & valid).astype(jnp.float32)
        unmasked = (~mask & valid).astype(jnp.float32)
        n_m, n_u = jnp.maximum(masked.sum(), 1.0), jnp.maximum(unmasked.sum(), 1.0)
        loss_m = loss_u = 0.0
        metrics = {}
        for i, (proj, emb, target) in enumerate(zip(projs, embeddings, ids)):
            logits = cosine_logits(proj, emb, self.temperature)
            ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, target[..., None], -1)[..., 0]
            hit = (jnp.argmax(logits, -1) == target).astype(jnp.float32)
            loss_m += (ce * masked).sum() / n_m
            loss_u += (ce * unmasked).sum() / n_u
            suffix = "" if i == 0 else f"_{i}"
            metrics["accuracy" + suffix] = (hit * masked).sum() / n_m
            metrics["accuracy_unmasked" + suffix] = (hit * unmasked).sum() / n_u
        loss = loss_m + self.unmasked_weight * loss_u + self.feature_penalty_weight * out.feature_penalty
        metrics.update(
            loss_masked=loss_m,
            loss_unmasked=loss_u,
            feature_penalty=out.feature_penalty,
            masked_fraction=masked.sum() / jnp.maximum(valid.sum(), 1),
            masked_frames=masked.sum(),
        )
        metrics.update(layerdrop_metrics(params, sown))
        return loss, metrics

