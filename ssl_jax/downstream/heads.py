"""Light downstream heads on a learnable softmax-weighted sum of upstream layers (SUPERB).

SUPERB (Yang et al., 2021) freezes the upstream and learns one weight per hidden state;
the softmax of those weights mixes the layers, and a light task head reads the mixture:
mean-pooling + linear for utterance classification, a linear CTC layer for phoneme
recognition, a BiLSTM + CTC for ASR, and an x-vector-like embedding for verification.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class LayerMix(nn.Module):
    """Softmax-weighted sum over the layer axis (weights start uniform)."""

    num_layers: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [batch, layers, ..., dim] -> [batch, ..., dim]."""
        if x.shape[1] != self.num_layers:
            raise ValueError(f"expected {self.num_layers} layers on axis 1, got shape {x.shape}")
        logits = self.param("layer_logits", nn.initializers.zeros, (self.num_layers,))
        w = jax.nn.softmax(logits).astype(x.dtype)
        return jnp.tensordot(w, jnp.moveaxis(x, 1, 0), axes=1)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: [batch, frames, dim], mask: [batch, frames] -> [batch, dim] mean over valid frames."""
    m = mask.astype(x.dtype)[..., None]
    return (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


class UtteranceClassifier(nn.Module):
    """Mean-pooled layers -> weighted sum -> one linear classifier per label set.

    The input is already mean-pooled per layer (pooling and the weighted sum commute).
    """

    num_layers: int
    num_classes: Sequence[int]

    @nn.compact
    def __call__(self, pooled: jax.Array) -> tuple[jax.Array, ...]:
        """pooled: [batch, layers, dim] -> tuple of logits [batch, classes_k]."""
        h = LayerMix(self.num_layers)(pooled)
        return tuple(nn.Dense(n, name=f"out_{k}")(h) for k, n in enumerate(self.num_classes))


class LinearCTC(nn.Module):
    """Weighted sum -> linear layer over the CTC vocabulary (index 0 = blank)."""

    num_layers: int
    vocab_size: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [batch, layers, frames, dim], mask: [batch, frames] -> logits [batch, frames, vocab]."""
        del mask
        return nn.Dense(self.vocab_size, name="out")(LayerMix(self.num_layers)(x))


class BiLSTMCTC(nn.Module):
    """Weighted sum -> projection -> bidirectional LSTM layers -> linear CTC output."""

    num_layers: int
    vocab_size: int
    hidden: int = 128
    lstm_layers: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [batch, layers, frames, dim], mask: [batch, frames] -> logits [batch, frames, vocab]."""
        h = nn.Dense(self.hidden, name="proj")(LayerMix(self.num_layers)(x))
        lengths = mask.sum(-1).astype(jnp.int32)
        for i in range(self.lstm_layers):
            h = nn.Bidirectional(
                nn.RNN(nn.OptimizedLSTMCell(self.hidden), name=f"fwd_{i}"),
                nn.RNN(nn.OptimizedLSTMCell(self.hidden), name=f"bwd_{i}"),
                name=f"bilstm_{i}",
            )(h, seq_lengths=lengths)
        return nn.Dense(self.vocab_size, name="out")(h)


class XVector(nn.Module):
    """x-vector-like speaker embedding: TDNN frame layers, mean+std pooling, embedding.

    Trained as a speaker classifier; the embedding (before the classifier) is scored by
    cosine similarity for verification (Snyder et al., 2018, in miniature).
    """

    num_layers: int
    num_speakers: int
    channels: int = 128
    embed_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [batch, layers, frames, dim], mask: [batch, frames] -> (embedding [batch, e], logits)."""
        h = LayerMix(self.num_layers)(x)
        m = mask.astype(h.dtype)[..., None]
        for i, (k, d) in enumerate(((5, 1), (3, 2), (1, 1))):
            h = nn.relu(nn.Conv(self.channels, (k,), kernel_dilation=(d,), name=f"tdnn_{i}")(h * m))
            h = nn.LayerNorm(name=f"norm_{i}")(h)
        mean = masked_mean(h, mask)
        var = masked_mean(jnp.square(h - mean[:, None]), mask)
        stats = jnp.concatenate([mean, jnp.sqrt(var + 1e-5)], axis=-1)
        emb = nn.Dense(self.embed_dim, name="embedding")(stats)
        logits = nn.Dense(self.num_speakers, name="out")(nn.relu(emb))
        return emb, logits
