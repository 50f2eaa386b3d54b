"""Transformer encoder of wav2vec 2.0-style models (Vaswani et al., 2017; Baevski et al., 2020).

Post-LN blocks (BASE) or pre-LN "stable layer norm" blocks (LARGE), self-attention with a key
padding mask and an optional (WavLM, gated) relative position bias, LayerDrop (Fan et al., 2019)
that skips a dropped layer's compute, optional rematerialisation. Every layer's hidden state is
returned.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.feature_extractor import LN_EPS, gelu
from ssl_jax.models.position import (
    ConvPositionalEmbedding,
    PositionBiasGate,
    RelativePositionBias,
    StackedConvPositionalEmbedding,
)
from ssl_jax.parallel.sharding import constrain

ACTIVATION_AXES = ("batch", "frames", "embed")
HEAD_AXES = ("batch", "frames", "heads", "kv")
# Where a training forward pass records which layers LayerDrop kept: the variable
# `intermediates/.../layers_kept`, bool[num_layers], sown only when LayerDrop is active.
LAYERDROP_COLLECTION = "intermediates"
LAYERS_KEPT = "layers_kept"
# Where a forward pass applied with `mutable=[FFN_COLLECTION]` records every block's feed-forward
# output before its residual connection (`ffn_outputs/.../layers_<i>/ffn_output`), the targets
# of data2vec (Baevski et al., 2022, Sec. 3.3).
FFN_COLLECTION = "ffn_outputs"
FFN_OUTPUT = "ffn_output"


# `model.remat`: what a rematerialised layer keeps from its forward pass for the backward pass.
# "none" runs no remat; the rest name `jax.checkpoint_policies` ("full" = save nothing).
REMAT_POLICIES = (
    "none",
    "full",
    "nothing_saveable",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "everything_saveable",
)


def remat_policy(value: Any) -> str:
    """The policy name for a `model.remat` value (a name above; True/False as "full"/"none")."""
    if isinstance(value, bool):
        return "full" if value else "none"
    if value not in REMAT_POLICIES:
        raise ValueError(f"model.remat must be one of {REMAT_POLICIES}, got {value!r}")
    return value


def remat_layer(cls: type[nn.Module], policy: str, static_argnums: tuple[int, ...]) -> type[nn.Module]:
    """`cls` itself, or rematerialised under the named policy (`remat_policy`)."""
    policy = remat_policy(policy)
    if policy == "none":
        return cls
    name = "nothing_saveable" if policy == "full" else policy
    return nn.remat(cls, static_argnums=static_argnums, policy=getattr(jax.checkpoint_policies, name))


def _dense(features: int, axes: tuple[str | None, str | None], dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
        name=name,
    )


def layer_norm(dtype, name: str) -> nn.LayerNorm:
    """LayerNorm over the model dimension with the reference epsilon (1e-5)."""
    return nn.LayerNorm(
        epsilon=LN_EPS,
        use_fast_variance=False,
        dtype=dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention with key padding mask and optional gated relative bias.

    Attributes:
      dim: model dimension; num_heads: heads; dropout: attention-probability dropout;
      gated_bias: whether this layer gates a relative position bias (WavLM).
    """

    dim: int
    num_heads: int
    dropout: float = 0.0
    gated_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array, position_bias: jax.Array | None, deterministic: bool
    ) -> jax.Array:
        """x: [batch, frames, dim]; mask: bool[batch, frames] (True = real frame);
        position_bias: [heads, frames, frames] or None -> [batch, frames, dim]."""
        b, t, _ = x.shape
        hd = self.dim // self.num_heads

        def project(name: str) -> jax.Array:  # [batch, frames, heads, head_dim], whole heads per tensor shard
            y = _dense(self.dim, ("embed", "heads"), self.dtype, name)(x).reshape(b, t, self.num_heads, hd)
            return constrain(y, HEAD_AXES)

        q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
        bias = None
        if position_bias is not None:
            if self.gated_bias:
                bias = PositionBiasGate(self.num_heads, self.dtype, name="gate")(x, position_bias)
            else:
                bias = position_bias[None]
        if deterministic or self.dropout == 0.0:
            # XLA's fused attention on CPU/TPU; cuDNN's flash attention on GPUs for bf16/fp16.
            # Scores and softmax are float32 for float32 inputs; the padding mask hides keys.
            out = jax.nn.dot_product_attention(
                q, k, v, bias=None if bias is None else bias.astype(q.dtype), mask=mask[:, None, None, :]
            )
            return _dense(self.dim, ("heads", "embed"), self.dtype, "out_proj")(out.reshape(b, t, self.dim))
        # Attention-probability dropout: the explicit form (dot_product_attention has none).
        scores = jnp.einsum("bqhd,bkhd->bhqk", q * (hd**-0.5), k).astype(jnp.float32)
        if bias is not None:
            scores = scores + bias.astype(jnp.float32)
        # Padding as an additive [batch, 1, 1, keys] bias: cheaper than a select over the full
        # scores tensor, and its gradient is free.
        key_bias = jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
        probs = jax.nn.softmax(scores + key_bias[:, None, None, :], axis=-1)
        probs = nn.Dropout(self.dropout)(probs, deterministic=deterministic).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, self.dim)
        return _dense(self.dim, ("heads", "embed"), self.dtype, "out_proj")(out)


class FeedForward(nn.Module):
    """Dense -> GELU -> dropout -> Dense -> dropout."""

    dim: int
    intermediate_size: int
    activation_dropout: float = 0.0
    hidden_dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        """x: [batch, frames, dim] -> [batch, frames, dim]."""
        h = _dense(self.intermediate_size, ("embed", "mlp"), self.dtype, "intermediate_dense")(x)
        h = constrain(h, ("batch", "frames", "mlp"))
        h = nn.Dropout(self.activation_dropout)(gelu(h), deterministic=deterministic)
        h = _dense(self.dim, ("mlp", "embed"), self.dtype, "output_dense")(h)
        return nn.Dropout(self.hidden_dropout)(h, deterministic=deterministic)


class EncoderLayer(nn.Module):
    """One Transformer block, post-LN (`layer_norm_first=False`) or pre-LN."""

    dim: int
    num_heads: int
    intermediate_size: int
    layer_norm_first: bool = False
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    activation_dropout: float = 0.0
    gated_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array, position_bias: jax.Array | None, deterministic: bool
    ) -> jax.Array:
        """x: [batch, frames, dim]; mask: bool[batch, frames] -> [batch, frames, dim]."""
        attention = SelfAttention(
            self.dim, self.num_heads, self.attention_dropout, self.gated_bias, self.dtype, name="attention"
        )
        feed_forward = FeedForward(
            self.dim, self.intermediate_size, self.activation_dropout, self.hidden_dropout, self.dtype,
            name="feed_forward",
        )
        ln = layer_norm(self.dtype, "layer_norm")
        final_ln = layer_norm(self.dtype, "final_layer_norm")
        drop = nn.Dropout(self.hidden_dropout)
        if self.layer_norm_first:
            h = attention(ln(x), mask, position_bias, deterministic)
            x = x + drop(h, deterministic=deterministic)
            f = feed_forward(final_ln(x), deterministic)
            if not self.is_initializing():
                self.sow(FFN_COLLECTION, FFN_OUTPUT, f)
            x = x + f
        else:
            h = attention(x, mask, position_bias, deterministic)
            x = ln(x + drop(h, deterministic=deterministic))
            f = feed_forward(x, deterministic)
            if not self.is_initializing():
                self.sow(FFN_COLLECTION, FFN_OUTPUT, f)
            x = final_ln(x + f)
        return constrain(x, ACTIVATION_AXES)


class TransformerEncoder(nn.Module):
    """Positional embedding + stack of `EncoderLayer`s.

    Attributes:
      config: an `ssl_jax.models.encoder.EncoderConfig`.
    """

    config: Any

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array, deterministic: bool = True, keep: jax.Array | None = None
    ) -> tuple[tuple[jax.Array, ...], jax.Array]:
        """Runs the encoder.

        Args:
          x: [batch, frames, dim] projected features.
          mask: bool[batch, frames], True = real frame.
          deterministic: disables dropout and LayerDrop when True.
          keep: optional int32[batch, kept] frame indices (data2vec 2.0's student): the blocks run
            on those frames only, after the positional embedding of the full sequence; frames
            that `mask` marks False (padding and, for the student, masked frames) are zero
            there, so nothing of them reaches the output.
        Returns:
          hidden_states: tuple of num_layers + 1 arrays [batch, frames, dim] ([batch, kept, dim]
            with `keep`): the input of the first
            layer, then each layer's output (transformers' `output_hidden_states` order); a
            dropped layer's output is its input.
          last_hidden_state: [batch, frames, dim]: the last layer's output, after the final
            LayerNorm in the pre-LN variant.
        With LayerDrop active, one draw per layer (from the `dropout` stream) decides for the
        whole batch, and bool[num_layers] of kept layers is sown as
        `LAYERDROP_COLLECTION/LAYERS_KEPT` (apply with `mutable=[LAYERDROP_COLLECTION]`).
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        x = jnp.where(mask[..., None], x, 0.0).astype(dtype)
        if cfg.num_pos_conv_layers == 1:
            pos = ConvPositionalEmbedding(
                cfg.hidden_size, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, dtype, name="pos_conv"
            )
        else:
            pos = StackedConvPositionalEmbedding(
                cfg.hidden_size, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups,
                cfg.num_pos_conv_layers, dtype, name="pos_conv",
            )
        x = x + pos(x, mask)
        if keep is not None:
            if cfg.relative_position_buckets > 0:
                raise ValueError("running on kept frames only needs absolute positions (no relative position bias)")
            x = jnp.take_along_axis(x, keep[..., None], axis=1)
            mask = jnp.take_along_axis(mask, keep, axis=1)
        final_ln = layer_norm(dtype, "layer_norm")
        if not cfg.layer_norm_first:
            x = final_ln(x)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        x = constrain(x, ACTIVATION_AXES)

        position_bias = None
        if cfg.relative_position_buckets > 0:
            position_bias = RelativePositionBias(
                cfg.relative_position_buckets, cfg.relative_position_max_distance, cfg.num_heads, name="rel_pos_bias"
            )(x.shape[1])

        layer_cls = remat_layer(EncoderLayer, cfg.remat, static_argnums=(4,))
        layerdrop = not deterministic and cfg.layerdrop > 0.0 and not self.is_initializing()
        hidden_states, kept = [x], []
        for i in range(cfg.num_layers):
            layer = layer_cls(
                cfg.hidden_size,
                cfg.num_heads,
                cfg.intermediate_size,
                cfg.layer_norm_first,
                cfg.attention_dropout,
                cfg.hidden_dropout,
                cfg.activation_dropout,
                position_bias is not None,
                dtype,
                name=f"layers_{i}",
            )
            if layerdrop:
                # A dropped layer is not run at all (as in the reference), so its parameters get
                # an exact zero gradient and it costs no compute.
                keep = jax.random.uniform(self.make_rng("dropout")) >= cfg.layerdrop
                x = nn.cond(
                    keep,
                    lambda mdl, h, m, b: mdl(h, m, b, deterministic),
                    lambda mdl, h, m, b: h,
                    layer, x, mask, position_bias,
                )
                kept.append(keep)
            else:
                x = layer(x, mask, position_bias, deterministic)
            hidden_states.append(x)
        if kept:
            self.sow(LAYERDROP_COLLECTION, LAYERS_KEPT, jnp.stack(kept))
        last = final_ln(x) if cfg.layer_norm_first else x
        return tuple(hidden_states), last


def dropped_layers_mask(params: Any, kept: jax.Array) -> Any:
    """Marks the parameters of the layers LayerDrop skipped.

    Args:
      params: `TransformerEncoder` parameters (`{"layers_0": ..., "pos_conv": ..., ...}`).
      kept: bool[num_layers] as sown under `LAYERS_KEPT`.
    Returns:
      A tree shaped like `params` with a bool scalar per leaf: True on every leaf of a dropped
      layer (it got no gradient this step), False elsewhere.
    """

    def mark(name: str, subtree: Any) -> Any:
        if name.startswith("layers_") and name[len("layers_"):].isdigit():
            dropped = ~kept[int(name[len("layers_"):])]
            return jax.tree.map(lambda _: dropped, subtree)
        return jax.tree.map(lambda _: jnp.zeros((), bool), subtree)

    return {name: mark(name, subtree) for name, subtree in params.items()}
