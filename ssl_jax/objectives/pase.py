"""PASE / PASE+: one encoder, several regression workers (Pascual et al., 2019, "Learning
Problem-agnostic Speech Representations from Multiple Self-supervised Tasks"; Ravanelli et al.,
2020, "Multi-task self-supervised learning for Robust Speech Recognition").

The frame encoder reads the (contaminated, `data.augment`) waveform; at every encoder frame a
small MLP worker per task (one hidden layer of `objective.worker_hidden` units, PReLU) regresses
a target computed from the clean waveform (`clean_audio` when the batch carries it, else
`audio`):

  wave     the `hop` samples at the centre of the frame's window
  lps      log power spectrum, ln |STFT|^2 of a Hann-windowed frame, window // 2 + 1 bins
  fbank    log mel energies, `objective.fbank_bins` bands
  mfcc     `objective.mfcc_coefficients` MFCCs (DCT of the dB mel spectrum over 40 bands)
  prosody  log energy, zero-crossing rate, voicing (normalised autocorrelation at the pitch
           lag) and log F0 from an autocorrelation pitch tracker (voiced frames; the
           utterance's mean voiced log F0 elsewhere)

Target frame t reads the samples [t * hop, t * hop + window) (not centred, as
models/frontends.py), hop being the encoder's frame step, so it is the window the encoder's
frame t starts at; frames past either the encoder's or the target's valid frames are left out.
Each target is standardised per utterance over its valid frames (per dimension; the waveform
by one mean and deviation), so the workers' losses share a scale; the loss is the mean of the
workers' losses (equal weights, as the papers), MSE except the workers in
`objective.l1_workers` (L1; the released PASE+ waveform decoder).

Deviations: the waveform worker regresses each frame's samples from that frame alone (the
papers' decoder upsamples the whole sequence with transposed convolutions); the targets are
standardised per utterance instead of by training-set statistics; the prosody targets come
from a plain autocorrelation tracker, not the papers' pitch extractor, and carry no deltas;
the PASE+ gammatone, long-window and infomax (MI/CMI) workers are left out.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.data import features
from ssl_jax.data.shards import SAMPLE_RATE
from ssl_jax.models import frame_encoder
from ssl_jax.models.encoder import config_from
from ssl_jax.objectives import Objective, register

WORKERS = ("wave", "lps", "fbank", "mfcc", "prosody")
PROSODY = ("log_energy", "zcr", "voicing", "log_f0")
VOICED = 0.5  # normalised autocorrelation at the pitch lag above which a frame counts as voiced
_EPS = 1e-8
_MFCC_MELS = 40


# ----------------------------------------------------------------------------- targets


def centre_samples(wavs: jax.Array, lengths: jax.Array, *, window: int, hop: int) -> tuple[jax.Array, jax.Array]:
    """The waveform worker's target: the `hop` samples at the centre of each frame's window.

    Args:
      wavs: [batch, samples]; lengths: [batch] valid samples.
    Returns:
      ([batch, frames, hop] = samples [t * hop + (window - hop) // 2, ... + hop) of frame t,
      frame lengths [batch]), with `features.frames`' frames.
    """
    if hop > window:
        raise ValueError(f"the waveform target takes hop ({hop}) samples out of a window of {window}")
    x, n = features.frames(wavs, lengths, frame_length=window, hop_length=hop)
    start = (window - hop) // 2
    return x[..., start : start + hop], n


def pitch_lags(window: int, sample_rate: int, f0_range: tuple[float, float]) -> tuple[int, int]:
    """The lags (lo, hi), in samples, the pitch tracker searches; an error if none fit the window."""
    lo, hi = math.ceil(sample_rate / f0_range[1]), min(math.floor(sample_rate / f0_range[0]), window - 2)
    if not 1 <= lo < hi:
        raise ValueError(f"f0_range {f0_range} Hz gives no pitch lags within a window of {window} samples")
    return lo, hi


def pitch(frames: jax.Array, *, sample_rate: int = SAMPLE_RATE,
          f0_range: tuple[float, float] = (60.0, 400.0)) -> tuple[jax.Array, jax.Array]:
    """Autocorrelation pitch of each frame.

    The lag is the peak of the (biased) autocorrelation within the lags of `f0_range`, which
    prefers the first period over its multiples, refined by a parabola through the peak;
    voicing is the normalised cross-correlation of the frame's head and tail at that lag.

    Args:
      frames: [..., window] samples (the mean is removed here).
    Returns:
      (f0 in Hz [...], voicing in [0, 1] [...]; 0 for a silent frame).
    """
    window = frames.shape[-1]
    lo, hi = pitch_lags(window, sample_rate, f0_range)
    x = frames.astype(jnp.float32) - frames.mean(-1, keepdims=True)
    n_fft = 1 << (2 * window - 1).bit_length()
    spec = jnp.fft.rfft(x, n=n_fft, axis=-1)
    r = jnp.fft.irfft(jnp.square(jnp.abs(spec)), n=n_fft, axis=-1)[..., :window]
    k = lo + jnp.argmax(r[..., lo : hi + 1], axis=-1)
    # the parabola goes through the overlap-normalised values, which the taper does not skew
    at = lambda lag: jnp.take_along_axis(r, lag[..., None], -1)[..., 0] / (window - lag)  # noqa: E731
    a, b, c = at(k - 1), at(k), at(k + 1)
    curve = a - 2.0 * b + c
    shift = jnp.where(curve < 0, 0.5 * (a - c) / jnp.where(curve < 0, curve, -1.0), 0.0)
    f0 = sample_rate / (k + jnp.clip(shift, -0.5, 0.5))
    energy = jnp.cumsum(jnp.square(x), -1)
    head = jnp.take_along_axis(energy, (window - 1 - k)[..., None], -1)[..., 0]
    tail = energy[..., -1] - jnp.take_along_axis(energy, (k - 1)[..., None], -1)[..., 0]
    voicing = jnp.clip(b * (window - k) / jnp.sqrt(head * tail + _EPS * _EPS), 0.0, 1.0)
    return f0, voicing


def prosody(wavs: jax.Array, lengths: jax.Array, *, window: int, hop: int,
            f0_range: tuple[float, float] = (60.0, 400.0)) -> tuple[jax.Array, jax.Array]:
    """Per-frame prosody: `PROSODY` = log energy, zero-crossing rate, voicing, log F0.

    Log energy is ln(mean square + 1e-10) of the frame; log F0 of an unvoiced frame (voicing
    at most `VOICED`) is the mean log F0 of the utterance's voiced frames (log 100 Hz if none).

    Args:
      wavs: [batch, samples]; lengths: [batch] valid samples.
    Returns:
      ([batch, frames, 4], frame lengths [batch]); zero beyond them.
    """
    x, n = features.frames(wavs, lengths, frame_length=window, hop_length=hop)
    valid = jnp.arange(x.shape[1])[None, :] < n[:, None]
    log_energy = jnp.log(jnp.mean(jnp.square(x), -1) + 1e-10)
    zcr, _ = features.zero_crossing_rate(wavs, lengths, frame_length=window, hop_length=hop)
    f0, voicing = pitch(x, f0_range=f0_range)
    voiced = valid & (voicing > VOICED)
    log_f0 = jnp.log(f0)
    count = voiced.sum(1, keepdims=True)
    mean = jnp.where(count > 0, jnp.where(voiced, log_f0, 0.0).sum(1, keepdims=True) / jnp.maximum(count, 1),
                     math.log(100.0))
    log_f0 = jnp.where(voiced, log_f0, mean)
    out = jnp.stack([log_energy, zcr[..., 0], voicing, log_f0], -1)
    return jnp.where(valid[..., None], out, 0.0), n


def worker_targets(wavs: jax.Array, lengths: jax.Array, workers: tuple[str, ...], *, window: int, hop: int,
                   mfcc_coefficients: int = 20, fbank_bins: int = 40,
                   f0_range: tuple[float, float] = (60.0, 400.0)) -> tuple[dict[str, jax.Array], jax.Array]:
    """Raw (unstandardised) targets of `workers`, all on the frames of `features.frames`.

    Args:
      wavs: [batch, samples] (at least `window`); lengths: [batch] valid samples.
    Returns:
      ({worker: [batch, frames, dim]}, frame lengths [batch]); dims: wave `hop`, lps
      window // 2 + 1, fbank `fbank_bins`, mfcc `mfcc_coefficients`, prosody 4.
    """
    out = {}
    common = dict(n_fft=window, hop_length=hop, center=False)
    for name in workers:
        if name == "wave":
            out[name] = centre_samples(wavs, lengths, window=window, hop=hop)[0]
        elif name == "lps":
            out[name] = features.log_power_spectrum(wavs, lengths, **common)[0]
        elif name == "fbank":
            out[name] = features.log_mel(wavs, lengths, n_mels=fbank_bins, scale="ln", **common)[0]
        elif name == "mfcc":
            out[name] = features.mfcc(wavs, lengths, n_mfcc=mfcc_coefficients, n_mels=_MFCC_MELS, **common)[0]
        elif name == "prosody":
            out[name] = prosody(wavs, lengths, window=window, hop=hop, f0_range=f0_range)[0]
        else:
            raise ValueError(f"unknown PASE worker {name!r}; known: {WORKERS}")
    return out, features.frame_lengths(lengths, hop, window)


def standardize(x: jax.Array, valid: jax.Array, per_dim: bool = True) -> jax.Array:
    """Per-utterance standardisation over the valid frames.

    Args:
      x: [batch, frames, dim]; valid: bool[batch, frames].
      per_dim: one mean and deviation per dimension (else one for all of an utterance's values).
    Returns:
      [batch, frames, dim], zero on invalid frames.
    """
    m = valid[..., None].astype(jnp.float32)
    axes = (1,) if per_dim else (1, 2)
    count = jnp.maximum(jnp.sum(m * jnp.ones_like(x), axes, keepdims=True), 1.0)
    mean = jnp.sum(x * m, axes, keepdims=True) / count
    var = jnp.sum(jnp.square(x - mean) * m, axes, keepdims=True) / count
    return jnp.where(m > 0, (x - mean) * jax.lax.rsqrt(var + _EPS), 0.0)


def regression_loss(pred: jax.Array, target: jax.Array, valid: jax.Array, kind: str = "mse") -> jax.Array:
    """Mean squared (or absolute, `kind="l1"`) error over the valid frames and all dims.

    Args:
      pred, target: [batch, frames, dim]; valid: bool[batch, frames].
    """
    diff = pred.astype(jnp.float32) - target
    err = jnp.abs(diff) if kind == "l1" else jnp.square(diff)
    m = valid[..., None].astype(jnp.float32)
    return jnp.sum(err * m) / jnp.maximum(m.sum() * target.shape[-1], 1.0)


def fit_frames(x: jax.Array, num: int) -> jax.Array:
    """x [batch, frames, ...] cut or zero-padded to `num` frames."""
    if x.shape[1] >= num:
        return x[:, :num]
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, num - x.shape[1])
    return jnp.pad(x, pad)


# ----------------------------------------------------------------------------- workers


class Worker(nn.Module):
    """A PASE worker: Dense(hidden) -> PReLU (a slope per unit) -> Dense(out).

    Attributes: hidden; out.
    """

    hidden: int
    out: int

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """h: [batch, frames, embed] -> [batch, frames, out]."""
        x = nn.Dense(self.hidden, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), name="hidden")(h)
        slope = self.param("slope", nn.with_logical_partitioning(nn.initializers.constant(0.25), ("mlp",)), (self.hidden,))
        x = jnp.where(x >= 0, x, slope * x)
        return nn.Dense(self.out, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", None)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)), name="out")(x)


# ----------------------------------------------------------------------------- objective


@register("pase")
class PaseObjective(Objective):
    """PASE+ from the full config (`model.*` of the frames architecture, `objective.*`).

    Params: `{"encoder", "workers": {name: worker}}`. Batch: `audio` [batch, samples] (the
    contaminated input), `audio_mask`; optional `clean_audio` (the targets' source).
    """

    def __init__(self, config: Any):
        self.config = config
        self.encoder_config = config_from(config["model"])
        if not isinstance(self.encoder_config, frame_encoder.Config):
            raise ValueError("PASE trains the frame encoder: set model.architecture='frames'")
        o = config["objective"]
        self.workers = tuple(str(w) for w in o["workers"])
        unknown = [w for w in self.workers if w not in WORKERS]
        if not self.workers or unknown or len(set(self.workers)) != len(self.workers):
            raise ValueError(f"objective.workers must name distinct workers of {WORKERS}, got {self.workers}")
        self.l1_workers = tuple(str(w) for w in o["l1_workers"])
        if any(w not in self.workers for w in self.l1_workers):
            raise ValueError(f"objective.l1_workers {self.l1_workers} must be among objective.workers {self.workers}")
        self.window = int(o["window"])
        self.hop = self.encoder_config.downsampling
        self.mfcc_coefficients = int(o["mfcc_coefficients"])
        self.fbank_bins = int(o["fbank_bins"])
        self.f0_range = tuple(float(f) for f in o["f0_range"])
        if self.hop > self.window:
            raise ValueError(f"objective.window ({self.window}) must cover the encoder's frame step ({self.hop} samples)")
        if not 0 < self.mfcc_coefficients <= _MFCC_MELS or self.fbank_bins < 1:
            raise ValueError(f"objective.mfcc_coefficients must be in [1, {_MFCC_MELS}] and fbank_bins >= 1, got "
                             f"{self.mfcc_coefficients}, {self.fbank_bins}")
        if len(self.f0_range) != 2 or not 0 < self.f0_range[0] < self.f0_range[1]:
            raise ValueError(f"objective.f0_range must be (lo, hi) Hz with 0 < lo < hi, got {self.f0_range}")
        pitch_lags(self.window, SAMPLE_RATE, self.f0_range)
        self.dims = {"wave": self.hop, "lps": self.window // 2 + 1, "fbank": self.fbank_bins,
                     "mfcc": self.mfcc_coefficients, "prosody": len(PROSODY)}
        hidden = int(o["worker_hidden"])
        self.encoder = frame_encoder.Encoder(self.encoder_config)
        self.heads = {w: Worker(hidden, self.dims[w]) for w in self.workers}
        # the trainer shows `loss` anyway; the MFCC worker's (the most phonetic target) beside it
        shown = sorted(self.workers, key=lambda w: w != "mfcc")
        self.SUMMARY = {f"loss_{w}": f"{w} worker loss" for w in shown}

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Boxed parameters for a batch of this shape."""
        keys = jax.random.split(rng, len(self.workers) + 1)
        enc = self.encoder.init({"params": keys[0]}, batch["audio"], batch["audio_mask"])["params"]
        h = jnp.zeros((1, 1, self.encoder_config.hidden_size), jnp.float32)
        return {"encoder": enc, "workers": {w: self.heads[w].init(k, h)["params"] for w, k in zip(self.workers, keys[1:])}}

    def targets(self, batch: dict, num_frames: int) -> tuple[dict[str, jax.Array], jax.Array]:
        """Standardised targets from `clean_audio` (else `audio`) on `num_frames` encoder frames.

        Returns:
          ({worker: [batch, num_frames, dim]}, target-valid bool[batch, num_frames]).
        """
        source = batch["clean_audio"] if "clean_audio" in batch else batch["audio"]
        lengths = jnp.asarray(batch["audio_mask"]).astype(jnp.int32).sum(-1)
        raw, n = worker_targets(jnp.asarray(source), lengths, self.workers, window=self.window, hop=self.hop,
                                mfcc_coefficients=self.mfcc_coefficients, fbank_bins=self.fbank_bins,
                                f0_range=self.f0_range)
        valid = jnp.arange(num_frames)[None, :] < n[:, None]
        return {w: fit_frames(x, num_frames) for w, x in raw.items()}, valid

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """(mean of the workers' losses, metrics: loss_<worker> for each, masked_frames = the
        frames every worker is scored on)."""
        del step, state
        out = self.encoder.apply({"params": params["encoder"]}, batch["audio"], batch["audio_mask"],
                                 deterministic=not train, rngs={"dropout": rng} if train else {})
        h = out.last_hidden_state
        raw, target_valid = self.targets(batch, h.shape[1])
        valid = out.frame_mask & target_valid
        metrics = {}
        for w in self.workers:
            target = jax.lax.stop_gradient(standardize(raw[w], valid, per_dim=w != "wave"))
            pred = self.heads[w].apply({"params": params["workers"][w]}, h)
            metrics[f"loss_{w}"] = regression_loss(pred, target, valid, "l1" if w in self.l1_workers else "mse")
        loss = sum(metrics.values()) / len(self.workers)
        metrics["masked_frames"] = valid.sum().astype(jnp.float32)
        return loss, metrics

