"""Log-mel front end: stacked log-mel frames where the conv waveform extractor's output goes.

Small self-supervised models learn more from log-mel input than from a waveform extractor
trained from scratch: APC and NPC (Chung et al., 2019; Liu et al., 2021) read 80-d log-mel,
w2v-BERT (Chung et al., 2021) stacks log-mel frames before a projection, and MelHuBERT
(Lin et al., 2023) replaces HuBERT's conv extractor by log-mel input. Frames are not
centred, so frame t reads samples [t * hop, t * hop + window) only and an utterance's frames
never depend on the padding around it; `stack` adjacent frames are concatenated, giving one
frame every `hop * stack` samples (320 = 50 Hz, the conv extractor's rate, by default).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data.features import hann_window, mel_filterbank

NORMS = ("none", "utterance")
_FLOOR = 1e-10


def logmel_frame_lengths(sample_lengths, window: int, hop: int, stack: int):
    """Valid stacked frames for `sample_lengths` (numpy or jax ints, any shape)."""
    xp = jnp if isinstance(sample_lengths, jax.Array) else np
    n = xp.maximum((xp.asarray(sample_lengths) - window) // hop + 1, 0)
    return (n // stack).astype(xp.int32)


class LogMelFrontend(nn.Module):
    """Waveforms -> stacked log-mel frames [batch, frames, bins * stack] (no parameters).

    Attributes:
      bins: mel bands (Slaney scale and area normalisation, as librosa).
      window: Hann window and FFT size in samples (400 = 25 ms).
      hop: samples between frames before stacking (160 = 10 ms).
      stack: adjacent frames concatenated into one output frame.
      norm: "utterance" standardises every band over the utterance's valid frames (removes
        the channel and much of the speaker, as CMVN does); "none" keeps natural-log energies.
    """

    bins: int = 80
    window: int = 400
    hop: int = 160
    stack: int = 2
    norm: str = "none"

    @nn.compact
    def __call__(self, wavs: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """wavs: [batch, samples] (zero beyond lengths), lengths: [batch] -> (frames, frame lengths)."""
        if self.norm not in NORMS:
            raise ValueError(f"logmel norm must be one of {NORMS}, got {self.norm!r}")
        num = max((wavs.shape[1] - self.window) // self.hop + 1, 0) // self.stack * self.stack
        if num == 0:
            raise ValueError(f"{wavs.shape[1]} samples are too few for one log-mel frame of {self.window} x {self.stack}")
        idx = np.arange(num)[:, None] * self.hop + np.arange(self.window)[None, :]
        frames = wavs.astype(jnp.float32)[:, idx] * jnp.asarray(hann_window(self.window, self.window))
        power = jnp.square(jnp.abs(jnp.fft.rfft(frames, axis=-1)))
        fb = jnp.asarray(mel_filterbank(16_000, self.window, self.bins))
        mel = jnp.log(jnp.maximum(jnp.matmul(power, fb, precision=jax.lax.Precision.HIGHEST), _FLOOR))
        valid_frames = jnp.maximum((lengths - self.window) // self.hop + 1, 0)
        valid = (jnp.arange(num)[None, :] < valid_frames[:, None])[..., None]
        if self.norm == "utterance":
            count = jnp.maximum(valid.sum(1, keepdims=True), 1)
            mean = jnp.where(valid, mel, 0.0).sum(1, keepdims=True) / count
            var = jnp.where(valid, jnp.square(mel - mean), 0.0).sum(1, keepdims=True) / count
            mel = (mel - mean) * jax.lax.rsqrt(var + 1e-5)
        out = mel.reshape(mel.shape[0], num // self.stack, self.stack * self.bins)
        n = logmel_frame_lengths(lengths, self.window, self.hop, self.stack)
        out = jnp.where((jnp.arange(out.shape[1])[None, :] < n[:, None])[..., None], out, 0.0)
        return out, n


class UnitFrontend(nn.Module):
    """Waveforms -> embeddings of discrete units [batch, frames, dim] (Discrete BERT's input).

    Each frame's 39-d MFCC (+ deltas) at the encoder's 320-sample stride
    (`features.mfcc_frames`) is standardised by the `mean` and `std` parameters and assigned to
    the nearest of the `centers` parameters (frozen k-means codebook: nothing trains them, the
    objective holds them); its unit id indexes a learned embedding table.

    Attributes:
      units: codebook size; dim: embedding size; stride: samples per frame.
    """

    units: int
    dim: int
    stride: int = 320

    @nn.compact
    def __call__(self, wavs: jax.Array, lengths: jax.Array, num_frames: int) -> tuple[jax.Array, jax.Array]:
        """wavs [batch, samples], lengths [batch] -> (embeddings [batch, frames, dim], unit ids int32[batch, frames])."""
        from ssl_jax.data.features import MFCC_DIM, mfcc_frames

        mean = self.param("mean", nn.with_logical_partitioning(nn.initializers.zeros, (None,)), (MFCC_DIM,))
        std = self.param("std", nn.with_logical_partitioning(nn.initializers.ones, (None,)), (MFCC_DIM,))
        centers = self.param("centers", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", None)),
                             (self.units, MFCC_DIM))
        f = (mfcc_frames(wavs, lengths, num_frames, self.stride) - jax.lax.stop_gradient(mean)) / jax.lax.stop_gradient(std)
        c = jax.lax.stop_gradient(centers)
        d = (f * f).sum(-1, keepdims=True) - 2.0 * jnp.einsum("btd,kd->btk", f, c) + (c * c).sum(-1)
        ids = jnp.argmin(d, axis=-1).astype(jnp.int32)
        table = self.param("embedding", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "conv_channels")),
                           (self.units, self.dim))
        return jnp.take(table, ids, axis=0), ids
