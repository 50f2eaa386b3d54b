"""Waveform feature extractor: seven strided 1-D convolutions, 320x down-sampling to 50 Hz.

wav2vec 2.0 (Baevski et al., 2020, Sec. 2 and 4.2): "default" mode puts a GroupNorm (one group per
channel) after the first convolution; "layer" mode puts a LayerNorm after every convolution. The
GroupNorm here takes its statistics over valid frames only, so a padded item gives the same
valid frames as the item alone.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LN_EPS = 1e-5


def conv_output_lengths(lengths, kernels: Sequence[int], strides: Sequence[int]):
    """Frames each conv layer keeps: floor((L - kernel) / stride) + 1, never below 0.

    Args:
      lengths: int array (numpy or jax) of input sample counts, any shape.
    Returns:
      int array of the same shape: valid frames after the last layer.
    """
    xp = jnp if isinstance(lengths, jax.Array) else np
    out = lengths
    for k, s in zip(kernels, strides):
        out = xp.maximum((out - k) // s + 1, 0)
    return out


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as the reference implementations use."""
    return nn.gelu(x, approximate=False)


class MaskedGroupNorm(nn.Module):
    """GroupNorm with one group per channel, statistics over valid frames.

    Attributes:
      features: number of channels.
    """

    features: int
    epsilon: float = LN_EPS

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [batch, frames, channels]; mask: bool[batch, frames] -> [batch, frames, channels]."""
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, ("conv_channels",)), (self.features,)
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_channels",)), (self.features,)
        )
        dtype = x.dtype
        x = x.astype(jnp.float32)
        m = mask[..., None].astype(jnp.float32)
        count = jnp.maximum(m.sum(axis=1, keepdims=True), 1.0)
        mean = (x * m).sum(axis=1, keepdims=True) / count
        var = (jnp.square(x - mean) * m).sum(axis=1, keepdims=True) / count
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(dtype)


class FeatureExtractor(nn.Module):
    """Conv stack over raw audio.

    Attributes:
      conv_dim, conv_kernel, conv_stride: per-layer channels, kernel widths and strides.
      conv_bias: whether the convolutions have a bias.
      norm: "group" (GroupNorm after layer 0) or "layer" (LayerNorm after every layer).
      dtype: compute dtype.
    """

    conv_dim: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_bias: bool = False
    norm: str = "group"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, wavs: jax.Array, sample_lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Extracts conv features.

        Args:
          wavs: [batch, samples] float audio (padding anywhere after `sample_lengths`).
          sample_lengths: int[batch] valid samples per item.
        Returns:
          features [batch, frames, conv_dim[-1]] and frame_lengths int[batch].
        """
        if self.norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.norm!r}")
        x = wavs[..., None].astype(self.dtype)
        lengths = sample_lengths.astype(jnp.int32)
        for i, (c, k, s) in enumerate(zip(self.conv_dim, self.conv_kernel, self.conv_stride)):
            x = nn.Conv(
                c,
                kernel_size=(k,),
                strides=(s,),
                padding="VALID",
                use_bias=self.conv_bias,
                dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.he_normal(), ("conv_kernel", "conv_in", "conv_channels")
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_channels",)),
                name=f"conv_{i}",
            )(x)
            lengths = jnp.maximum((lengths - k) // s + 1, 0)
            if self.norm == "group" and i == 0:
                mask = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
                x = MaskedGroupNorm(c, name=f"norm_{i}")(x, mask)
            elif self.norm == "layer":
                x = nn.LayerNorm(
                    epsilon=LN_EPS,
                    use_fast_variance=False,
                    dtype=self.dtype,
                    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("conv_channels",)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_channels",)),
                    name=f"norm_{i}",
                )(x)
            x = gelu(x)
        return x, lengths
