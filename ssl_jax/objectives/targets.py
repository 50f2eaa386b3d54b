"""Frame features that masked-prediction targets are clustered from, computed in the graph at
the encoder's frame rate, so a target lines up with its frame by construction (no label files).

* `mfcc`: 13 MFCCs with deltas and delta-deltas (39-d, HuBERT iteration 1). The MFCCs are
  taken at 100 Hz on frames covering samples [160 j, 160 j + 400) (Kaldi's framing, as the
  reference's feature dump), deltas at 100 Hz, then every second frame: encoder frame t (its
  conv receptive field is [320 t, 320 t + 400)) gets MFCC frame 2t, the reference's
  label-rate rule for 100 Hz labels and 50 Hz features.
* `layer`: a hidden state of a frozen encoder (HuBERT iteration 2+), `hidden_states[layer]`
  with index 0 the Transformer's input, as `Upstream` counts layers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data.features import MFCC_DIM, mfcc_frames  # noqa: F401 (re-exported)

def layer_frames(encoder: Any, params: Any, wavs: jax.Array, audio_mask: jax.Array, layer: int) -> jax.Array:
    """`hidden_states[layer]` [batch, frames, dim] of `encoder` (a `SpeechEncoder`) with frozen
    `params`, deterministic and without gradient."""
    out = encoder.apply({"params": jax.lax.stop_gradient(params)}, wavs, audio_mask, deterministic=True)
    return jax.lax.stop_gradient(out.hidden_states[layer].astype(jnp.float32))


def standardize_per_utterance(frames: jax.Array, valid: jax.Array) -> jax.Array:
    """Each utterance's frames [batch, frames, dim] to zero mean and unit variance per dimension
    over its `valid` bool[batch, frames] frames (CMVN); invalid frames become zero."""
    v = valid[..., None].astype(jnp.float32)
    count = jnp.maximum(v.sum(1, keepdims=True), 1.0)
    mean = (frames * v).sum(1, keepdims=True) / count
    var = (jnp.square(frames - mean) * v).sum(1, keepdims=True) / count
    return (frames - mean) * jax.lax.rsqrt(var + 1e-5) * v


class TargetFeatures:
    """The frames a masked-prediction recipe clusters (`objective.targets`), for the objective's
    step and for `ssl_jax.cluster` alike.

    Args:
        encoder: the student's `EncoderConfig` (frame count and stride).
        source: "mfcc" or "layer"; layer: `hidden_states` index; teacher: the frozen encoder's
            `EncoderConfig` (source "layer").
        normalize: "none", or "utterance" for per-utterance CMVN of the frames.
    """

    def __init__(self, encoder: Any, source: str, layer: int = 0, teacher: Any = None, normalize: str = "none"):
        if source not in ("mfcc", "layer"):
            raise ValueError(f"objective.targets.source must be 'mfcc' or 'layer', got {source!r}")
        if normalize not in ("none", "utterance"):
            raise ValueError(f"objective.targets.normalize must be 'none' or 'utterance', got {normalize!r}")
        if source == "layer" and teacher is None:
            raise ValueError("layer targets need the frozen encoder's config")
        self.encoder, self.source, self.layer, self.teacher, self.normalize = encoder, source, layer, teacher, normalize

    def __call__(self, wavs: jax.Array, audio_mask: jax.Array, teacher_params: Any = None) -> tuple[jax.Array, jax.Array]:
        """(frames f32[batch, frames, dim], valid bool[batch, frames]) of a padded batch."""
        from ssl_jax.models.encoder import SpeechEncoder, frame_lengths

        lengths = audio_mask.sum(-1).astype(jnp.int32)
        n = frame_lengths(self.encoder, lengths)
        num = int(frame_lengths(self.encoder, np.asarray([wavs.shape[1]]))[0])
        wavs = jnp.where(audio_mask, wavs, 0.0)
        if self.source == "mfcc":
            f = mfcc_frames(wavs, lengths, num, self.encoder.downsampling)
        else:
            f = layer_frames(SpeechEncoder(self.teacher), teacher_params, wavs, audio_mask, self.layer)
        valid = jnp.arange(f.shape[1])[None, :] < n[:, None]
        if self.normalize == "utterance":
            f = standardize_per_utterance(f, valid)
        return f, valid


def from_config(config: Any, teacher: Any = None) -> TargetFeatures:
    """The `TargetFeatures` of a recipe's `objective.targets` (`teacher`: the frozen encoder's
    `EncoderConfig` for layer targets)."""
    from ssl_jax.models.encoder import EncoderConfig

    t = config["objective"]["targets"]
    return TargetFeatures(EncoderConfig.from_config(config["model"]), t["source"], int(t.get("layer", 0)), teacher,
                          t.get("normalize", "none"))
