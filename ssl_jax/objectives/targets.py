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

from ssl_jax.data import features

MFCC_DIM = 39
_HALF_WINDOW = 200  # centred frames of the shifted signal = Kaldi frames of the original


def mfcc_frames(wavs: jax.Array, lengths: jax.Array, num_frames: int, stride: int = 320) -> jax.Array:
    """MFCC + deltas + delta-deltas at the encoder's frames: f32[batch, num_frames, 39].

    Args:
        wavs: [batch, samples] 16 kHz; lengths: [batch] valid samples.
        num_frames: the encoder's frames for this batch shape.
        stride: samples per encoder frame (a multiple of the 160-sample MFCC hop).
    Frames beyond an item's valid MFCC frames are zero (callers mask by the encoder's frames).
    """
    if stride % 160:
        raise ValueError(f"MFCC targets need an encoder stride that is a multiple of 160 samples, got {stride}")
    shifted = wavs[:, _HALF_WINDOW:]
    n_shift = jnp.maximum(jnp.asarray(lengths, jnp.int32) - _HALF_WINDOW, 0)
    c, n = features.mfcc(shifted, n_shift, n_mfcc=13, n_mels=40)
    d1 = features.deltas(c, n)
    d2 = features.deltas(d1, n)
    full = jnp.concatenate([c, d1, d2], axis=-1)  # [batch, 100 Hz frames, 39]
    idx = jnp.minimum(jnp.arange(num_frames) * (stride // 160), full.shape[1] - 1)
    return full[:, idx]


def layer_frames(encoder: Any, params: Any, wavs: jax.Array, audio_mask: jax.Array, layer: int) -> jax.Array:
    """`hidden_states[layer]` [batch, frames, dim] of `encoder` (a `SpeechEncoder`) with frozen
    `params`, deterministic and without gradient."""
    out = encoder.apply({"params": jax.lax.stop_gradient(params)}, wavs, audio_mask, deterministic=True)
    return jax.lax.stop_gradient(out.hidden_states[layer].astype(jnp.float32))
