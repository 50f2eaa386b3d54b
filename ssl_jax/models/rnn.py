"""Recurrent layers for the predictive classics: GRU and LSTM, uni- or bidirectional.

APC and VQ-APC (Chung et al., 2019; Chung et al., 2020) stack unidirectional GRUs/LSTMs with
residual connections; modified CPC (Rivière et al., 2020) reads its encoder with a one-layer
LSTM. The input projections of every time step are one matmul before the scan; only the
recurrent matmul runs step by step. Padding is explicit: a padded step leaves the state
unchanged and outputs zeros, so an utterance's outputs never depend on the padding after it,
and the backward direction of a bidirectional layer starts at each utterance's own last frame.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

CELLS = ("gru", "lstm")
_GATES = {"gru": 3, "lstm": 4}


def reverse_valid(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Reverses each row's valid prefix in time; padding stays where it is.

    Args:
      x: [batch, frames, dim]; lengths: int[batch] valid frames.
    Returns:
      [batch, frames, dim] with row b's frames 0..lengths[b]-1 in reverse order.
    """
    t = jnp.arange(x.shape[1])[None, :]
    idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return jnp.take_along_axis(x, idx[..., None], axis=1)


def _gru_step(h: jax.Array, gx: jax.Array, w_h: jax.Array, b_hn: jax.Array) -> jax.Array:
    """One GRU update (PyTorch's form: the reset gate scales the recurrent candidate term)."""
    gh = h @ w_h
    d = h.shape[-1]
    r = jax.nn.sigmoid(gx[..., :d] + gh[..., :d])
    z = jax.nn.sigmoid(gx[..., d : 2 * d] + gh[..., d : 2 * d])
    n = jnp.tanh(gx[..., 2 * d :] + r * (gh[..., 2 * d :] + b_hn))
    return (1.0 - z) * n + z * h


class Recurrent(nn.Module):
    """One direction of a GRU or LSTM over a padded batch.

    Attributes:
      cell: "gru" or "lstm".
      hidden: state size.
      reverse: run from each utterance's last valid frame to its first.
      dtype: compute dtype of the input projection (the recurrence runs in float32).
    """

    cell: str
    hidden: int
    reverse: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [batch, frames, dim], mask: bool[batch, frames] (a prefix) -> [batch, frames, hidden], 0 on padding."""
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        g = _GATES[self.cell] * self.hidden
        w_i = self.param("input_kernel", nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
                         (x.shape[-1], g))
        w_h = self.param("recurrent_kernel", nn.with_logical_partitioning(nn.initializers.orthogonal(), (None, "mlp")),
                         (self.hidden, g))
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (g,))
        lengths = mask.sum(-1).astype(jnp.int32)
        if self.reverse:
            x = reverse_valid(x, lengths)
        gx = (x.astype(self.dtype) @ w_i.astype(self.dtype)).astype(jnp.float32) + b
        batch = x.shape[0]
        if self.cell == "gru":
            b_hn = self.param("recurrent_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                              (self.hidden,))

            def step(h, inputs):
                gx_t, m_t = inputs
                new = _gru_step(h, gx_t, w_h, b_hn)
                h = jnp.where(m_t[:, None], new, h)
                return h, jnp.where(m_t[:, None], h, 0.0)

            carry = jnp.zeros((batch, self.hidden), jnp.float32)
        else:

            def step(hc, inputs):
                h, c = hc
                gx_t, m_t = inputs
                z = gx_t + h @ w_h
                i, f, gg, o = jnp.split(z, 4, axis=-1)
                c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
                h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
                h = jnp.where(m_t[:, None], h_new, h)
                c = jnp.where(m_t[:, None], c_new, c)
                return (h, c), jnp.where(m_t[:, None], h, 0.0)

            carry = (jnp.zeros((batch, self.hidden), jnp.float32), jnp.zeros((batch, self.hidden), jnp.float32))
        _, ys = jax.lax.scan(step, carry, (jnp.swapaxes(gx, 0, 1), jnp.swapaxes(mask, 0, 1)))
        y = jnp.swapaxes(ys, 0, 1)
        if self.reverse:
            y = reverse_valid(y, lengths)
        return y


class RecurrentLayer(nn.Module):
    """A uni- or bidirectional recurrent layer of output size `hidden` (each direction hidden // 2
    when bidirectional, concatenated).

    Attributes: cell; hidden; bidirectional; dtype.
    """

    cell: str
    hidden: int
    bidirectional: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [batch, frames, dim], mask: bool[batch, frames] -> [batch, frames, hidden]."""
        if not self.bidirectional:
            return Recurrent(self.cell, self.hidden, dtype=self.dtype, name="forward")(x, mask)
        if self.hidden % 2:
            raise ValueError(f"a bidirectional layer needs an even hidden size, got {self.hidden}")
        fwd = Recurrent(self.cell, self.hidden // 2, dtype=self.dtype, name="forward")(x, mask)
        bwd = Recurrent(self.cell, self.hidden // 2, reverse=True, dtype=self.dtype, name="backward")(x, mask)
        return jnp.concatenate([fwd, bwd], axis=-1)
