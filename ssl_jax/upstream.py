"""`Upstream`: a frozen, jitted view of a trained or converted encoder for probing and notebooks.

  up = Upstream.load("runs/w2v2_tiny")   # a workdir, its checkpoints folder, a step folder or a converted checkpoint
  out = up(wavs, lengths)                # wavs [batch, samples] float32 16 kHz, lengths [batch] samples
  out.hidden_states                      # num_layers + 1 arrays [batch, frames, dim], transformers' order
  out.lengths                            # [batch] valid frames
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta

from ssl_jax.models.encoder import EncoderConfig, SpeechEncoder, frame_lengths

SAMPLE_RATE = 16_000


class UpstreamOutput(NamedTuple):
    """hidden_states: tuple of [batch, frames, dim]; lengths: int32[batch] valid frames."""

    hidden_states: tuple[jax.Array, ...]
    lengths: np.ndarray


def normalize_waveforms(wavs: jax.Array, mask: jax.Array) -> jax.Array:
    """Zero mean, unit variance per utterance over valid samples (padding stays 0). [batch, samples]."""
    m = mask.astype(jnp.float32)
    n = jnp.maximum(m.sum(-1, keepdims=True), 1.0)
    mean = (wavs * m).sum(-1, keepdims=True) / n
    var = (jnp.square(wavs - mean) * m).sum(-1, keepdims=True) / n
    return jnp.where(mask, (wavs - mean) / jnp.sqrt(var + 1e-7), 0.0)


class Upstream:
    """Deterministic encoder forward pass returning every layer's hidden states.

    Attributes:
      config: the `EncoderConfig`.
      num_layers: Transformer layers (hidden_states has num_layers + 1 entries).
      dim: hidden size.
      frame_rate: frames per second (50.0 for the standard extractor).
      normalize: whether waveforms are normalised per utterance before encoding.
    """

    def __init__(self, params: Mapping[str, Any], config: EncoderConfig | Mapping[str, Any], *, normalize: bool = False):
        self.config = config if isinstance(config, EncoderConfig) else EncoderConfig.from_config(config)
        self.params = jax.tree.map(jnp.asarray, meta.unbox(params))
        self.normalize = bool(normalize)
        self.num_layers = self.config.num_layers
        self.dim = self.config.hidden_size
        self.frame_rate = SAMPLE_RATE / self.config.downsampling
        model = SpeechEncoder(self.config)

        def forward(params, wavs, lengths):
            mask = jnp.arange(wavs.shape[1])[None, :] < lengths[:, None]
            if self.normalize:
                wavs = normalize_waveforms(wavs, mask)
            out = model.apply({"params": params}, wavs, mask, deterministic=True)
            return out.hidden_states, out.frame_mask.sum(-1).astype(jnp.int32)

        self._forward = jax.jit(forward)

    @classmethod
    def load(cls, path: str) -> "Upstream":
        """Loads a checkpoint written by training or `python -m ssl_jax.convert` (via `load_pretrained`)."""
        from ssl_jax.training.checkpoint import load_pretrained

        params, config = load_pretrained(path)
        if "model" not in config:
            raise ValueError(f"{path}: the checkpoint's config has no `model` section")
        if isinstance(params, Mapping) and "encoder" in params:
            params = params["encoder"]
        data = config.get("data") or {}
        convert = config.get("convert") or {}
        normalize = bool(data.get("normalize", convert.get("normalize", False)))
        return cls(params, config["model"], normalize=normalize)

    def frame_lengths(self, lengths) -> np.ndarray:
        """Valid frames for sample counts `lengths`."""
        return np.asarray(frame_lengths(self.config, np.asarray(lengths)))

    def __call__(self, wavs, lengths) -> UpstreamOutput:
        """wavs: [batch, samples] float32 16 kHz; lengths: int[batch] valid samples -> UpstreamOutput."""
        wavs = jnp.asarray(wavs, jnp.float32)
        lengths = jnp.asarray(lengths, jnp.int32)
        if wavs.ndim != 2 or lengths.shape != (wavs.shape[0],):
            raise ValueError(f"expected wavs [batch, samples] and lengths [batch], got {wavs.shape} and {lengths.shape}")
        hidden_states, frames = self._forward(self.params, wavs, lengths)
        return UpstreamOutput(tuple(hidden_states), np.asarray(frames))
