"""Shared by tests/objectives/test_cpc.py and test_wav2vec.py: jitted init and encoder calls of
a future-prediction objective, and its scores computed straight from the definitions."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np


def init_params(obj: Any, batch: dict) -> Any:
    """Unboxed parameters of `obj` for `batch` (jitted init), with random step predictors: they
    start at zero, where every score is 0 and no gradient reaches the encoder."""
    params = jax.jit(lambda k, b: nn.unbox(obj.init(k, b)))(jax.random.key(0), batch)
    dense = params["predictor"]["steps"]
    keys = jax.random.split(jax.random.key(7), len(dense))
    scale = dense["kernel"].shape[0] ** -0.5
    params["predictor"]["steps"] = {name: scale * jax.random.normal(k, v.shape)
                                    for k, (name, v) in zip(keys, sorted(dense.items()))}
    return params


def encoder_fn(obj: Any) -> Callable:
    """params, batch -> the objective's encoder output (EncoderOutput) in eval mode, jitted."""
    return jax.jit(lambda p, b: obj.encode(p, b, jax.random.key(1), 0, False)[0])


def numpy_scores(pred: np.ndarray, z: np.ndarray, neg: np.ndarray, lengths, steps: int) -> list:
    """(positive score, distractor scores) of every (t, k) pair with t + k inside its utterance.

    pred: [batch, frames, K, dim] (pred[b, t, k-1] predicts z[b, t+k]); z: [batch, frames, dim];
    neg: int[batch, frames, N] distractors of each target frame; lengths: valid frames per row.
    """
    out = []
    for b, length in enumerate(lengths):
        for t in range(length):
            for k in range(1, steps + 1):
                if t + k < length:
                    p = pred[b, t, k - 1]
                    out.append((p @ z[b, t + k], np.array([p @ z[b, j] for j in neg[b, t + k]])))
    return out


def numpy_negatives(rng: np.random.Generator, lengths, frames: int, num: int) -> np.ndarray:
    """int[batch, frames, num]: for each target frame s < length, draws from the other valid frames."""
    out = np.zeros((len(lengths), frames, num), np.int32)
    for b, length in enumerate(lengths):
        for s in range(length):
            j = rng.integers(0, length - 1, num)
            out[b, s] = j + (j >= s)
    return out
