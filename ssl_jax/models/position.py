"""Positional information for the Transformer encoder.

* `ConvPositionalEmbedding`: one weight-normalised grouped convolution (wav2vec 2.0, Baevski et al.,
  2020, Sec. 2; weight normalisation over every axis but the kernel axis).
* `StackedConvPositionalEmbedding`: data2vec-audio's several plain convolutions, each followed by a
  LayerNorm without parameters and GELU (Baevski et al., 2022, Sec. 3).
* `relative_position_buckets`, `RelativePositionBias` and `gated_position_bias`: WavLM's bucketed
  relative position bias with its gate computed from the query (Chen et al., 2022, Sec. 3.2).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.feature_extractor import LN_EPS, gelu


def _same_padding(kernel: int) -> tuple[int, int]:
    # Pad kernel//2 on both sides, then drop the last frame when the kernel is even, so the
    # output has as many frames as the input.
    return (kernel // 2, kernel // 2 - (1 - kernel % 2))


def grouped_conv1d(x: jax.Array, kernel: jax.Array, groups: int, padding: tuple[int, int]) -> jax.Array:
    """Grouped 1-D convolution as one plain convolution per group.

    XLA's CPU backend runs `feature_group_count` convolutions several times slower than the
    same work split into per-group convolutions (measured ~6x for BASE's 128-wide, 16-group
    positional conv, forward + backward).

    Args:
      x: [batch, frames, channels_in]; kernel: [width, channels_in // groups, channels_out].
    Returns:
      [batch, frames_out, channels_out].
    """
    cin, cout = x.shape[-1] // groups, kernel.shape[-1] // groups
    outs = [
        jax.lax.conv_general_dilated(
            x[..., g * cin:(g + 1) * cin],
            kernel[..., g * cout:(g + 1) * cout],
            window_strides=(1,),
            padding=[padding],
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
        for g in range(groups)
    ]
    return outs[0] if groups == 1 else jnp.concatenate(outs, axis=-1)


class GroupedConv(nn.Module):
    """Same-length grouped 1-D convolution with bias (parameters `kernel` [width, dim // groups, dim], `bias`)."""

    dim: int
    kernel: int
    groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [batch, frames, dim] -> [batch, frames, dim]."""
        w = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.he_normal(), ("conv_kernel", None, "embed")),
            (self.kernel, self.dim // self.groups, self.dim),
        )
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (self.dim,))
        y = grouped_conv1d(x.astype(self.dtype), w.astype(self.dtype), self.groups, _same_padding(self.kernel))
        return y + b.astype(self.dtype)


class ConvPositionalEmbedding(nn.Module):
    """Weight-normalised grouped convolution + GELU.

    Attributes:
      dim: model dimension (input = output channels).
      kernel: kernel width (128 in BASE).
      groups: convolution groups (16 in BASE).
    """

    dim: int
    kernel: int
    groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [batch, frames, dim] (padded frames already zero); mask: bool[batch, frames] -> [batch, frames, dim]."""
        del mask  # one layer over zeroed padding sees exactly what the unpadded item sees
        if self.dim % self.groups:
            raise ValueError(f"hidden_size {self.dim} is not divisible by {self.groups} positional conv groups")
        std = math.sqrt(4.0 / (self.kernel * self.dim))
        v = self.param(
            "weight_v",
            nn.with_logical_partitioning(nn.initializers.normal(std), ("conv_kernel", None, "embed")),
            (self.kernel, self.dim // self.groups, self.dim),
        )
        g = self.param(
            "weight_g",
            nn.with_logical_partitioning(lambda _, shape: jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2))), ("conv_kernel",)),
            (self.kernel,),
        )
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (self.dim,))
        w = v * (g / jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2))))[:, None, None]
        y = grouped_conv1d(x.astype(self.dtype), w.astype(self.dtype), self.groups, _same_padding(self.kernel))
        return gelu(y + b.astype(self.dtype))


class StackedConvPositionalEmbedding(nn.Module):
    """data2vec-audio positional embedding: `num_layers` x (grouped conv, LayerNorm without affine, GELU).

    Padded frames are set to zero between layers, so a padded item gives the same valid frames as
    the item alone (the reference leaks conv bias from the padding into the last valid frames).
    """

    dim: int
    kernel: int
    groups: int
    num_layers: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [batch, frames, dim]; mask: bool[batch, frames] -> [batch, frames, dim]."""
        for j in range(self.num_layers):
            if self.dim % self.groups:
                raise ValueError(f"hidden_size {self.dim} is not divisible by {self.groups} positional conv groups")
            x = GroupedConv(self.dim, self.kernel, self.groups, self.dtype, name=f"conv_{j}")(x)
            x = nn.LayerNorm(epsilon=LN_EPS, use_scale=False, use_bias=False, use_fast_variance=False, dtype=self.dtype)(x)
            x = gelu(x)
            if j < self.num_layers - 1:
                x = jnp.where(mask[..., None], x, 0.0)
        return x


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional log-spaced buckets of key - query offsets (static, computed on host).

    Half the buckets are for keys after the query; within a half, offsets below a quarter of
    `num_buckets` get their own bucket, larger ones share log-spaced buckets up to `max_distance`.

    Returns:
      int32 [length (query), length (key)].
    """
    pos = np.arange(length, dtype=np.int64)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        large = np.log(rel.astype(np.float32) / np.float32(max_exact))
        large = large / np.float32(math.log(max_distance / max_exact))
        large = large * np.float32(half - max_exact)
        large = (np.float32(max_exact) + large)
    large = np.where(np.isfinite(large), large, 0).astype(np.int64)
    large = np.minimum(large, half - 1)
    buckets = buckets + np.where(rel < max_exact, rel, large)
    return buckets.astype(np.int32)


class RelativePositionBias(nn.Module):
    """Learned bias per (bucket, head), shared by every layer.

    Attributes:
      num_buckets, max_distance: bucket layout (WavLM: 320, 800).
      num_heads: attention heads.
    """

    num_buckets: int
    max_distance: int
    num_heads: int

    @nn.compact
    def __call__(self, length: int) -> jax.Array:
        """Returns the bias [heads, frames (query), frames (key)] for a sequence of `length` frames."""
        table = self.param(
            "rel_attn_embed",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("buckets", None)),
            (self.num_buckets, self.num_heads),
        )
        idx = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return jnp.transpose(table[jnp.asarray(idx)], (2, 0, 1))


class PositionBiasGate(nn.Module):
    """WavLM's gate: scales each query's row of the relative bias by a function of that query.

    Attributes:
      num_heads: attention heads.
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        """x: [batch, frames, dim] (the attention input); bias: [heads, frames, frames] -> [batch, heads, frames, frames]."""
        b, t, d = x.shape
        xh = x.reshape(b, t, self.num_heads, d // self.num_heads)
        proj = nn.Dense(
            8,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("kv", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
            name="gru_rel_pos_linear",
        )(xh)
        proj = proj.astype(jnp.float32).reshape(b, t, self.num_heads, 2, 4).sum(-1)
        const = self.param(
            "gru_rel_pos_const", nn.with_logical_partitioning(nn.initializers.ones, (None,)), (self.num_heads,)
        )
        gates = jax.nn.sigmoid(proj)
        gate = gates[..., 0] * (gates[..., 1] * const - 1.0) + 2.0  # [batch, frames, heads]
        return jnp.transpose(gate, (0, 2, 1))[..., None] * bias[None].astype(jnp.float32)
