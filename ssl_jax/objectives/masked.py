"""What every objective that masks spans of encoder frames shares: the encoder config, the
span-mask settings (`objective.mask_prob`, `.mask_length`, `.min_masks`), frame counting, the
mask of a batch, and parameter initialisation and application of its `module` (a Flax module
called as `module(wavs, audio_mask, mask_time_indices, deterministic=...)` that sows LayerDrop).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.transformer import LAYERDROP_COLLECTION
from ssl_jax.objectives import Objective, masking


class MaskedObjective(Objective):
    """Base of the masked objectives; a subclass sets `self.module` in its `__init__`."""

    module: Any

    def __init__(self, config: Any):
        from ssl_jax.models.encoder import EncoderConfig

        self.config = config
        self.encoder_config = EncoderConfig.from_config(config["model"])
        o = config["objective"]
        self.mask_prob = float(o["mask_prob"])
        self.mask_length = int(o["mask_length"])
        self.min_masks = int(o["min_masks"])

    def num_frames(self, num_samples: int) -> int:
        """Encoder frames of `num_samples` samples."""
        from ssl_jax.models.encoder import frame_lengths

        return int(frame_lengths(self.encoder_config, np.asarray([num_samples]))[0])

    def frame_lengths(self, batch: dict) -> jax.Array:
        """Valid frames int32[batch] of a padded batch."""
        from ssl_jax.models.encoder import frame_lengths

        return frame_lengths(self.encoder_config, batch["audio_mask"].sum(-1).astype(jnp.int32))

    def draw_mask(self, batch: dict, rng: jax.Array) -> jax.Array:
        """bool[batch, frames]: the batch's `mask_time_indices` when given (tests), else span
        masks over its valid frames drawn from `rng`."""
        if "mask_time_indices" in batch:
            return jnp.asarray(batch["mask_time_indices"], bool)
        return masking.span_mask(
            rng, self.frame_lengths(batch), self.num_frames(batch["audio"].shape[1]),
            mask_prob=self.mask_prob, mask_length=self.mask_length, min_masks=self.min_masks,
        )

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Parameters of `module` (boxed with logical axis names) for a batch of this shape."""
        mask = jnp.zeros((batch["audio"].shape[0], self.num_frames(batch["audio"].shape[1])), bool)
        k_params, k_drop = jax.random.split(rng)
        return self.module.init({"params": k_params, "dropout": k_drop}, batch["audio"], batch["audio_mask"], mask,
                                deterministic=True)["params"]

    def apply(self, params: Any, batch: dict, mask: jax.Array, rng: jax.Array, train: bool) -> tuple[Any, dict]:
        """(`module`'s outputs, what it sowed under `LAYERDROP_COLLECTION`)."""
        return self.module.apply(
            {"params": params}, batch["audio"], batch["audio_mask"], mask,
            deterministic=not train, rngs={"dropout": rng}, mutable=[LAYERDROP_COLLECTION],
        )


def rebox(boxes: Any, values: Any) -> Any:
    """`values` (arrays) in the logical-axis boxes of `boxes` (a tree of the same structure, as
    `init` or `jax.eval_shape` of it returns), so the mesh rules shard them like parameters."""
    return jax.tree.map(
        lambda box, value: box.replace_boxed(jnp.asarray(value)) if isinstance(box, nn.meta.AxisMetadata) else jnp.asarray(value),
        boxes,
        values,
        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
    )
