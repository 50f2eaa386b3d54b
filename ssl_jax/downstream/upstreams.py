"""Upstreams the evaluator can probe: spectral baselines, a randomly initialised encoder, or a checkpoint.

* `fbank`: SUPERB's FBANK baseline, 80 log-mel energies (Yang et al., 2021, Sec. 4).
* `mfcc`: 13 MFCCs with deltas and delta-deltas, 39 dims (Davis & Mermelstein, 1980; the
  regression deltas of HTK), 25 ms window, 10 ms hop.
* `random:CONFIG_PATH[:ARG]`: the recipe's encoder with the random weights training starts
  from at seed 0, the usual "no pretraining" control.
* a path: an ssl_jax workdir, checkpoint or converted checkpoint (`ssl_jax.Upstream.load`).

All are `ssl_jax.upstream.LadderedUpstream`s: `up(wavs[batch, samples], lengths[batch])`
returns `hidden_states` (tuple of [batch, frames, dim]) and `lengths` ([batch] frames),
`up.embed(list of 1-D waveforms)` returns per input [layers, frames, dim], and calls pad to
a ladder of lengths so any mix of lengths compiles a bounded number of programs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.upstream import SAMPLE_RATE, LadderedUpstream, Upstream, checkpoint_normalize, normalize_waveforms

HOP = 160  # 10 ms at 16 kHz


class FeatureUpstream(LadderedUpstream):
    """A spectral baseline as an upstream with one hidden state of 100 Hz frames.

    Attributes:
      name: "fbank" or "mfcc".
      dim: feature size.
      normalize: whether waveforms are normalised per utterance first.
    """

    frame_rate = SAMPLE_RATE / HOP
    num_hidden_states = 1

    def __init__(self, name: str, features: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]], dim: int,
                 *, normalize: bool = False, **ladder: Any):
        """`features(wavs [batch, samples], lengths [batch]) -> ([batch, frames, dim], frames [batch])`,
        with frames = 1 + samples // 160 and frame t valid for t < 1 + length // 160."""
        self.name, self.dim, self.normalize = name, dim, bool(normalize)
        self._features = features
        super().__init__({}, multiple=HOP, **ladder)

    def _forward(self, state: Any, wavs: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        del state
        if self.normalize:
            wavs = normalize_waveforms(wavs, jnp.arange(wavs.shape[1])[None, :] < lengths[:, None])
        feats, frames = self._features(wavs, lengths)
        return feats[None], frames

    def frame_lengths(self, lengths) -> np.ndarray:
        """Valid centred frames: 1 + samples // 160."""
        return 1 + np.asarray(lengths) // HOP


def fbank_features(wavs: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """80 natural-log mel energies, 25 ms Hann window, 10 ms hop: [batch, frames, 80]."""
    from ssl_jax.data import features

    return features.fbank(wavs, lengths)


def mfcc_features(wavs: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """13 MFCCs (40 mel bands, 25 ms window, 10 ms hop) + deltas + delta-deltas: [batch, frames, 39]."""
    from ssl_jax.data import features

    c, frames = features.mfcc(wavs, lengths, n_mfcc=13, n_fft=400, hop_length=HOP)
    d = features.deltas(c, frames)
    dd = features.deltas(d, frames)
    return jnp.concatenate([c, d, dd], axis=-1), frames


def fbank(normalize: bool = False, **ladder: Any) -> FeatureUpstream:
    """SUPERB's FBANK baseline (80 dims, one "layer")."""
    return FeatureUpstream("fbank", fbank_features, 80, normalize=normalize, **ladder)


def mfcc(normalize: bool = False, **ladder: Any) -> FeatureUpstream:
    """The MFCC baseline (39 dims, one "layer")."""
    return FeatureUpstream("mfcc", mfcc_features, 39, normalize=normalize, **ladder)


def random_init(config_spec: str, normalize: bool | None = None, **ladder: Any) -> Upstream:
    """The encoder of a recipe with the weights training initialises at seed 0.

    Args:
      config_spec: `CONFIG_PATH[:ARG]`, e.g. `configs/w2v2_tiny.py`.
      normalize: None uses the recipe's `data.normalize` (False if absent).
    Returns:
      An `Upstream` named `random-NAME[-ARG]`.
    """
    import flax.linen as nn

    from ssl_jax import objectives
    from ssl_jax.training.config_check import load_config_file

    config = load_config_file(config_spec)
    if "model" not in config or "objective" not in config:
        raise ValueError(f"random:{config_spec}: the config has no `model` or `objective` section")
    objective = objectives.build(config)
    batch = {"audio": jnp.zeros((1, SAMPLE_RATE), jnp.float32), "audio_mask": jnp.ones((1, SAMPLE_RATE), bool)}
    # The key training uses for initialisation (ssl_jax/training/loop.py) with seed 0.
    key = jax.random.fold_in(jax.random.key(0), 0)
    params = jax.jit(lambda k: nn.unbox(objective.init(k, batch)))(key)
    if normalize is None:
        normalize = checkpoint_normalize(config)
    path, _, arg = config_spec.partition(":")
    name = "random-" + os.path.splitext(os.path.basename(path))[0] + (f"-{arg}" if arg else "")
    return Upstream(params["encoder"], config["model"], normalize=normalize, name=name, **ladder)


def load(spec: str, normalize: bool | None = None) -> LadderedUpstream:
    """Builds one upstream from its spec.

    Args:
      spec: `fbank`, `mfcc`, `random:CONFIG_PATH[:ARG]`, or a path that `ssl_jax.Upstream.load`
        accepts (workdir, checkpoint, step folder, converted checkpoint).
      normalize: per-utterance waveform normalisation; None = the checkpoint's (or recipe's)
        flag, False for the spectral baselines.
    """
    if spec == "fbank":
        return fbank(normalize=bool(normalize))
    if spec == "mfcc":
        return mfcc(normalize=bool(normalize))
    if spec.startswith("random:"):
        return random_init(spec[len("random:"):], normalize=normalize)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"upstream {spec!r}: not fbank, mfcc or random:CONFIG, and no such checkpoint path")
    return Upstream.load(spec, normalize=normalize)
