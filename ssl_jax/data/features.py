"""Spectral features in jnp: power spectrogram, (log-)mel, MFCC and the SUPERB FBANK baseline.

Definitions follow librosa (Slaney mel scale and area normalisation by default, periodic Hann
window, centred frames with zero padding, `power_to_db`, orthonormal DCT-II), so results match
`librosa.feature.melspectrogram` / `librosa.feature.mfcc` with the same parameters. All
functions take padded batches `wavs [batch, samples]` with optional `lengths [batch]`, are
jittable (parameters are static), and return `(features [batch, frames, dim], frame_lengths)`:
with centred frames, frame t of an item only sees samples before `lengths` when
t < 1 + lengths // hop_length, and features beyond the frame lengths are zero. With
`center=False` (librosa's `center=False`; the framing of models/frontends.py), frame t reads
samples [t * hop_length, t * hop_length + n_fft) and is valid when it ends within `lengths`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


def hz_to_mel(hz: np.ndarray, htk: bool = False) -> np.ndarray:
    """Hz -> mel: HTK (2595 log10(1 + f/700)) or Slaney (linear below 1 kHz, log above)."""
    hz = np.asarray(hz, np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz,
                    min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def mel_to_hz(mel: np.ndarray, htk: bool = False) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                    f_sp * mel)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, htk: bool = False,
                   norm: str | None = "slaney") -> np.ndarray:
    """Triangular mel filters, `[n_fft // 2 + 1, n_mels]` (float32).

    Args:
        norm: "slaney" scales each triangle to unit area (in Hz); None leaves peaks at 1.
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    elif norm is not None:
        raise ValueError(f"unknown mel norm {norm!r}; expected 'slaney' or None")
    return weights.T.astype(np.float32)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix `[n_in, n_out]` (keeps the first n_out coefficients)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    m[:, 0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of `win_length`, zero-padded to `n_fft` about the centre."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(w, (left, n_fft - win_length - left)).astype(np.float32)


def frame_lengths(lengths: jnp.ndarray, hop_length: int, window: int | None = None) -> jnp.ndarray:
    """Valid frames per item (int32 `[batch]`): centred, `1 + lengths // hop_length`; with
    `window`, non-centred frames of that many samples, `max((lengths - window) // hop_length + 1, 0)`."""
    lengths = jnp.asarray(lengths)
    if window is None:
        return (1 + lengths // hop_length).astype(jnp.int32)
    return jnp.maximum((lengths - window) // hop_length + 1, 0).astype(jnp.int32)


def frames(wavs: jnp.ndarray, lengths: jnp.ndarray | None = None, *, frame_length: int = 400,
           hop_length: int = 160) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Non-centred frames: frame t is samples [t * hop_length, t * hop_length + frame_length).

    Args:
        wavs: `[batch, samples]`, at least `frame_length` samples; samples at or beyond
            `lengths` read as zeros.
        lengths: `[batch]` valid samples (all by default).

    Returns:
        (`[batch, (samples - frame_length) // hop_length + 1, frame_length]` float32, zero beyond
        the frame lengths; frame lengths `[batch]`, the frames that end within `lengths`).
    """
    if wavs.ndim != 2:
        raise ValueError(f"wavs must be [batch, samples], got shape {wavs.shape}")
    if wavs.shape[1] < frame_length:
        raise ValueError(f"{wavs.shape[1]} samples are too few for one frame of {frame_length}")
    lengths = _lengths(wavs, lengths)
    wavs = jnp.where(jnp.arange(wavs.shape[1])[None, :] < lengths[:, None], wavs, 0.0).astype(jnp.float32)
    num = (wavs.shape[1] - frame_length) // hop_length + 1
    idx = np.arange(num)[:, None] * hop_length + np.arange(frame_length)[None, :]
    n = frame_lengths(lengths, hop_length, frame_length)
    return _zero_beyond(wavs[:, idx], n), n


def _lengths(wavs: jnp.ndarray, lengths: jnp.ndarray | None) -> jnp.ndarray:
    if lengths is None:
        return jnp.full((wavs.shape[0],), wavs.shape[1], jnp.int32)
    return jnp.asarray(lengths, jnp.int32)


@functools.partial(jax.jit, static_argnames=("n_fft", "hop_length", "win_length", "power", "center"))
def spectrogram(wavs: jnp.ndarray, lengths: jnp.ndarray | None = None, *, n_fft: int = 400,
                hop_length: int = 160, win_length: int | None = None,
                power: float = 2.0, center: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
    """|STFT|^power of centred, zero-padded frames (or, with `center=False`, of `frames`).

    Args:
        wavs: `[batch, samples]`; samples at or beyond `lengths` are treated as zeros.
        lengths: `[batch]` valid samples (all by default).

    Returns:
        (`[batch, frames, n_fft // 2 + 1]` with frames = 1 + samples // hop_length, or
        (samples - n_fft) // hop_length + 1 not centred; frame lengths `[batch]`).
    """
    if wavs.ndim != 2:
        raise ValueError(f"wavs must be [batch, samples], got shape {wavs.shape}")
    win_length = n_fft if win_length is None else win_length
    lengths = _lengths(wavs, lengths)
    if center:
        wavs = jnp.where(jnp.arange(wavs.shape[1])[None, :] < lengths[:, None], wavs, 0.0)
        padded = jnp.pad(wavs.astype(jnp.float32), ((0, 0), (n_fft // 2, n_fft // 2)))
        num_frames = 1 + wavs.shape[1] // hop_length
        idx = np.arange(num_frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
        framed, n = padded[:, idx], frame_lengths(lengths, hop_length)
    else:
        framed, n = frames(wavs, lengths, frame_length=n_fft, hop_length=hop_length)
    spec = jnp.abs(jnp.fft.rfft(framed * jnp.asarray(hann_window(win_length, n_fft)), n=n_fft, axis=-1))
    spec = spec ** power if power != 1.0 else spec
    return _zero_beyond(spec, n), n


@functools.partial(jax.jit, static_argnames=(
    "sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "power", "htk",
    "norm", "center"))
def mel_spectrogram(wavs: jnp.ndarray, lengths: jnp.ndarray | None = None, *,
                    sample_rate: int = 16_000, n_fft: int = 400, hop_length: int = 160,
                    win_length: int | None = None, n_mels: int = 80, fmin: float = 0.0,
                    fmax: float | None = None, power: float = 2.0, htk: bool = False,
                    norm: str | None = "slaney", center: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mel spectrogram `[batch, frames, n_mels]` and frame lengths (librosa's melspectrogram)."""
    spec, n = spectrogram(wavs, lengths, n_fft=n_fft, hop_length=hop_length,
                          win_length=win_length, power=power, center=center)
    fb = jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, htk, norm))
    return jnp.matmul(spec, fb, precision=_HIGHEST), n


def _power_to_db(mel: jnp.ndarray, n: jnp.ndarray, amin: float,
                 top_db: float | None) -> jnp.ndarray:
    db = 10.0 * jnp.log10(jnp.maximum(mel, amin))
    if top_db is not None:
        valid = jnp.arange(mel.shape[1])[None, :] < n[:, None]
        peak = jnp.max(jnp.where(valid[..., None], db, -jnp.inf), axis=(1, 2), keepdims=True)
        db = jnp.maximum(db, peak - top_db)
    return db


def _zero_beyond(feats: jnp.ndarray, n: jnp.ndarray) -> jnp.ndarray:
    valid = jnp.arange(feats.shape[1])[None, :] < n[:, None]
    return jnp.where(valid[..., None], feats, 0.0)


@functools.partial(jax.jit, static_argnames=(
    "sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "power", "htk",
    "norm", "scale", "amin", "top_db", "center"))
def log_mel(wavs: jnp.ndarray, lengths: jnp.ndarray | None = None, *, sample_rate: int = 16_000,
            n_fft: int = 400, hop_length: int = 160, win_length: int | None = None,
            n_mels: int = 80, fmin: float = 0.0, fmax: float | None = None, power: float = 2.0,
            htk: bool = False, norm: str | None = "slaney", scale: str = "db",
            amin: float = 1e-10, top_db: float | None = None,
            center: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Log-mel spectrogram `[batch, frames, n_mels]` and frame lengths.

    Args:
        scale: "db" is librosa's `power_to_db(S, ref=1, amin, top_db)` (top_db taken per item
            over its valid frames); "ln" is `log(max(S, amin))`.
    """
    mel, n = mel_spectrogram(wavs, lengths, sample_rate=sample_rate, n_fft=n_fft,
                             hop_length=hop_length, win_length=win_length, n_mels=n_mels,
                             fmin=fmin, fmax=fmax, power=power, htk=htk, norm=norm, center=center)
    if scale == "db":
        out = _power_to_db(mel, n, amin, top_db)
    elif scale == "ln":
        out = jnp.log(jnp.maximum(mel, amin))
    else:
        raise ValueError(f"unknown log scale {scale!r}; expected 'db' or 'ln'")
    return _zero_beyond(out, n), n


@functools.partial(jax.jit, static_argnames=(
    "n_mfcc", "sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "htk",
    "norm", "top_db", "lifter", "center"))
def mfcc(wavs: jnp.ndarray, lengths: jnp.ndarray | None = None, *, n_mfcc: int = 13,
         sample_rate: int = 16_000, n_fft: int = 400, hop_length: int = 160,
         win_length: int | None = None, n_mels: int = 40, fmin: float = 0.0,
         fmax: float | None = None, htk: bool = False, norm: str | None = "slaney",
         top_db: float | None = 80.0, lifter: int = 0, center: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
    """MFCC `[batch, frames, n_mfcc]` and frame lengths, as librosa.feature.mfcc:
    orthonormal DCT-II of `power_to_db(melspectrogram)`, optional sinusoidal liftering."""
    mel, n = mel_spectrogram(wavs, lengths, sample_rate=sample_rate, n_fft=n_fft,
                             hop_length=hop_length, win_length=win_length, n_mels=n_mels,
                             fmin=fmin, fmax=fmax, power=2.0, htk=htk, norm=norm, center=center)
    db = _power_to_db(mel, n, 1e-10, top_db)
    out = jnp.matmul(db, jnp.asarray(dct_matrix(n_mels, n_mfcc)), precision=_HIGHEST)
    if lifter > 0:
        k = np.arange(1, n_mfcc + 1)
        out = out * jnp.asarray(1 + (lifter / 2) * np.sin(np.pi * k / lifter), jnp.float32)
    return _zero_beyond(out, n), n


@functools.partial(jax.jit, static_argnames=("n_fft", "hop_length", "win_length", "amin", "center"))
def log_power_spectrum(wavs: jnp.ndarray, lengths: jnp.ndarray | None = None, *, n_fft: int = 400,
                       hop_length: int = 160, win_length: int | None = None, amin: float = 1e-10,
                       center: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Log power spectrum `ln(max(|STFT|^2, amin))`, `[batch, frames, n_fft // 2 + 1]`, and
    frame lengths; zero beyond them."""
    spec, n = spectrogram(wavs, lengths, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                          power=2.0, center=center)
    return _zero_beyond(jnp.log(jnp.maximum(spec, amin)), n), n


@functools.partial(jax.jit, static_argnames=("frame_length", "hop_length", "threshold"))
def zero_crossing_rate(wavs: jnp.ndarray, lengths: jnp.ndarray | None = None, *, frame_length: int = 400,
                       hop_length: int = 160, threshold: float = 1e-10) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Zero-crossing rate of non-centred frames (`frames`), `[batch, frames, 1]`, and frame lengths.

    As librosa's `zero_crossing_rate(center=False)`: the sign changes between consecutive samples
    of a frame over `frame_length`, samples within `threshold` of 0 counting as 0 and 0 as positive.
    """
    x, n = frames(wavs, lengths, frame_length=frame_length, hop_length=hop_length)
    negative = x < -threshold
    crossings = (negative[..., 1:] != negative[..., :-1]).sum(-1, keepdims=True)
    return _zero_beyond(crossings.astype(jnp.float32) / frame_length, n), n


@functools.partial(jax.jit, static_argnames=("width",))
def deltas(feats: jnp.ndarray, frame_lengths: jnp.ndarray, width: int = 2) -> jnp.ndarray:
    """Regression deltas over time, `[batch, frames, dim]`, repeating each item's edge frames.

    d_t = sum_{k=1..width} k (c_{t+k} - c_{t-k}) / (2 sum_k k^2), as in HTK/Kaldi.
    """
    t = jnp.arange(feats.shape[1])
    last = jnp.maximum(frame_lengths - 1, 0)[:, None]
    out = jnp.zeros_like(feats)
    for k in range(1, width + 1):
        ahead = jnp.take_along_axis(feats, jnp.minimum(t[None, :] + k, last)[..., None], axis=1)
        behind = jnp.take_along_axis(feats, jnp.clip(t[None, :] - k, 0, last)[..., None], axis=1)
        out = out + k * (ahead - behind)
    out = out / (2 * sum(k * k for k in range(1, width + 1)))
    return _zero_beyond(out, frame_lengths)


def fbank(wavs: jnp.ndarray, lengths: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The SUPERB FBANK baseline: 80-bin natural-log mel energies, 25 ms Hann window, 10 ms hop.

    Args:
        wavs: `[batch, samples]` at 16 kHz.
        lengths: `[batch]` valid samples.

    Returns:
        (`[batch, frames, 80]`, frame lengths `[batch]` = 1 + lengths // 160).
    """
    return log_mel(wavs, lengths, sample_rate=16_000, n_fft=400, hop_length=160, n_mels=80,
                   scale="ln", amin=1e-10)


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
    c, n = mfcc(shifted, n_shift, n_mfcc=13, n_mels=40)
    d1 = deltas(c, n)
    d2 = deltas(d1, n)
    full = jnp.concatenate([c, d1, d2], axis=-1)  # [batch, 100 Hz frames, 39]
    idx = jnp.minimum(jnp.arange(num_frames) * (stride // 160), full.shape[1] - 1)
    return full[:, idx]
