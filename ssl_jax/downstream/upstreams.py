"""Upstreams the evaluator can probe: the FBANK baseline or an ssl_jax checkpoint.

Both are called as `up(wavs[batch, samples], lengths[batch])` and return an object with
`hidden_states` (tuple of [batch, frames, dim]) and `lengths` ([batch] frames), plus
`frame_rate` (Hz) and `name`; the probe treats them identically.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass
class FeatureOutput:
    hidden_states: tuple[Any, ...]
    lengths: Any


class FbankUpstream:
    """80 log-mel filterbanks, 25 ms window, 10 ms hop: SUPERB's FBANK baseline (one "layer")."""

    name = "fbank"
    frame_rate = 100.0

    def __init__(self):
        from ssl_jax.data import features

        self._fbank = jax.jit(features.fbank)

    def __call__(self, wavs: np.ndarray, lengths: np.ndarray) -> FeatureOutput:
        feats, frame_lengths = self._fbank(wavs, lengths)
        return FeatureOutput(hidden_states=(feats,), lengths=frame_lengths)


def load(spec: str):
    """`fbank`, or a path that `ssl_jax.Upstream.load` accepts (workdir, checkpoint, step)."""
    if spec == "fbank":
        return FbankUpstream()
    import os

    if not os.path.exists(spec):
        raise FileNotFoundError(f"upstream {spec!r}: not 'fbank' and no such checkpoint path")
    from ssl_jax import Upstream

    up = Upstream.load(spec)
    if not hasattr(up, "name"):
        try:
            up.name = os.path.basename(os.path.normpath(spec))
        except AttributeError:
            pass
    return up
