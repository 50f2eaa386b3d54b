"""Waveform augmentation for pretraining, run on the host as Grain transforms of training batches.

Transforms, each drawn per utterance with its own probability and ranges (`data.augment.*`):
- speed perturbation by resampling with soxr (Ko et al., 2015, "Audio augmentation for speech
  recognition": factors 0.9/1.0/1.1); it changes the length, before the crop;
- pitch and formant shift: resampling by 2^(semitones/12), then WSOLA time-scale modification
  (Verhelst & Roelands, 1993) back to the original duration (the `pitch` + `rate` chain of
  WavAugment, Kharitonov et al., 2021, "Data augmenting contrastive learning of speech
  representations in the time domain");
- room reverberation with simulated impulse responses: the image method (Allen & Berkley, 1979)
  for the direct path and every reflection up to `_RIR_ORDER`, then a Gaussian late tail
  decaying by 60 dB per RT60 (Polack's statistical model, joined to the image sources as in
  Lehmann & Johansson, 2010) whose level follows from the room volume, so the direct-to-
  reverberant ratio comes from the geometry; wall absorption from Sabine's formula;
- additive noise at a random SNR: coloured noise (power spectrum ~ 1/f^beta) and babble, a sum
  of other utterances of the training split (as MUSAN babble in Snyder et al., 2018, "X-vectors");
- a telephone channel: 8 kHz sampling and 8-bit mu-law companding (ITU-T G.711);
- utterance mixing (WavLM, Chen et al., 2022, Sec. III-B): a random segment of another
  utterance of the same batch, at most `mix.max_fraction` of the primary's length and scaled to
  a primary-to-secondary energy ratio uniform in `mix.energy_db`, is added at a random place,
  so the primary speaker is the one heard most of the time; with `clean_copy` the targets can
  still come from the primary alone.

Every transform works on the real samples of one crop, `[samples]` float32 mono 16 kHz, so
padding stays zero; all but speed keep the length and the time alignment (reverberation is
aligned on the direct path), so frame targets stay valid. Randomness comes from
(data seed, batch number, global row, transform), never from the worker or the wall clock:
a batch is a pure function of its number, and a restored iterator continues exactly. The noise
and babble banks are built once per process from the data seed alone; a babble segment is a
random stretch of them (it may, rarely, hold a piece of the utterance it is added to).
Order within a crop: utterance mixing (from the other crops as they came in), pitch,
reverberation, babble, noise, telephone.

The impulse responses are generated here rather than with pyroomacoustics (the field's image-
method library): its full image method takes 20 ms to 2 s per response at these RT60s against
under 1 ms here, for the same RT60 and a C50 within a few dB (`benchmarks/bench_loader.py --rir`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np
import scipy.fft
import soxr

from ssl_jax.data.shards import SAMPLE_RATE

log = logging.getLogger(__name__)

SPEED_OF_SOUND = 343.0  # m/s
_SALT = 0x5A17  # separates augmentation streams from the pipeline's crop offsets
_STREAMS = {"speed": 0, "pitch": 1, "reverb": 2, "babble": 3, "noise": 4, "telephone": 5, "mix": 6}
_NOISE_BANK_SECONDS = 60.0  # per colour
_BABBLE_BANK_SECONDS = 60.0  # per speaker count
_RIR_ORDER = 2  # image sources up to this many reflections; the statistical tail after them
_RIR_MARGIN = 0.5  # m between the walls and the source or microphone
_RIR_MAX_SECONDS = 1.5
_WSOLA_FRAME, _WSOLA_HOP, _WSOLA_TOL, _WSOLA_STEP = 640, 320, 160, 4  # 40/20/10 ms
_MU = 255.0
_EPS = 1e-12


def _u64(seed: int) -> int:
    return int(seed) & 0xFFFFFFFFFFFFFFFF


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """The `data.augment` section, checked. A probability of 0 turns its transform off.

    Attributes:
        speed_prob, speed_factors: speed perturbation; a factor f plays the utterance f times
            faster (length / f), chosen uniformly from `speed_factors` (1.0 = unchanged).
        pitch_prob, pitch_semitones: pitch and formant shift, uniform in the (lo, hi) range.
        reverb_prob, reverb_rt60, reverb_room_min, reverb_room_max: RT60 in seconds uniform in
            the range; a shoebox room with each side uniform between the two (x, y, z) in metres.
        noise_prob, noise_snr_db, noise_colours: coloured noise, SNR uniform in the range, the
            spectral exponent beta chosen from `noise_colours` (0 white, 1 pink, 2 brown).
        babble_prob, babble_snr_db, babble_speakers: babble of k talkers, k uniform in the
            (lo, hi) range inclusive, SNR uniform in the range.
        telephone_prob: the telephone channel.
        mix_prob, mix_max_fraction, mix_energy_db: utterance mixing; the added segment covers at
            most this fraction of the primary, at a primary-to-secondary energy ratio (dB)
            uniform in the range.
        clean_copy: batches also carry `clean_audio`, the crop before every transform but
            speed (for objectives whose targets come from clean speech).
    """

    speed_prob: float = 0.0
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    pitch_prob: float = 0.0
    pitch_semitones: tuple[float, float] = (-3.0, 3.0)
    reverb_prob: float = 0.0
    reverb_rt60: tuple[float, float] = (0.2, 0.8)
    reverb_room_min: tuple[float, float, float] = (3.0, 3.0, 2.4)
    reverb_room_max: tuple[float, float, float] = (10.0, 8.0, 4.0)
    noise_prob: float = 0.0
    noise_snr_db: tuple[float, float] = (5.0, 20.0)
    noise_colours: tuple[float, ...] = (0.0, 1.0, 2.0)
    babble_prob: float = 0.0
    babble_snr_db: tuple[float, float] = (5.0, 20.0)
    babble_speakers: tuple[int, int] = (3, 6)
    telephone_prob: float = 0.0
    mix_prob: float = 0.0
    mix_max_fraction: float = 0.5
    mix_energy_db: tuple[float, float] = (-5.0, 5.0)
    clean_copy: bool = False

    def __post_init__(self):
        for name in _STREAMS:
            p = getattr(self, f"{name}_prob")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"data.augment.{name}.prob must be in [0, 1], got {p}")
        if not self.speed_factors or not all(0.5 <= f <= 2.0 for f in self.speed_factors):
            raise ValueError(f"data.augment.speed.factors must be non-empty, each in [0.5, 2], "
                             f"got {self.speed_factors}")
        _check_range("pitch.semitones", self.pitch_semitones, -12.0, 12.0)
        _check_range("reverb.rt60", self.reverb_rt60, 0.05, _RIR_MAX_SECONDS)
        for name in ("noise.snr_db", "babble.snr_db"):
            _check_range(name, getattr(self, name.replace(".", "_")), -20.0, 60.0)
        lo, hi = self.reverb_room_min, self.reverb_room_max
        if len(lo) != 3 or len(hi) != 3 or not all(
                2 * _RIR_MARGIN < a <= b <= 100.0 for a, b in zip(lo, hi)):
            raise ValueError(f"data.augment.reverb.room_min/room_max must be 3 sides in metres, "
                             f"each above {2 * _RIR_MARGIN} and min <= max <= 100, got {lo} and {hi}")
        if not self.noise_colours or not all(-2.0 <= b <= 4.0 for b in self.noise_colours):
            raise ValueError(f"data.augment.noise.colours must be non-empty exponents in [-2, 4], "
                             f"got {self.noise_colours}")
        if not 0.0 < self.mix_max_fraction <= 0.5:
            raise ValueError(f"data.augment.mix.max_fraction must be in (0, 0.5] (the primary speaker stays "
                             f"dominant), got {self.mix_max_fraction}")
        _check_range("mix.energy_db", self.mix_energy_db, -20.0, 20.0)
        k = self.babble_speakers
        if len(k) != 2 or int(k[0]) != k[0] or int(k[1]) != k[1] or not 1 <= k[0] <= k[1] <= 32:
            raise ValueError(f"data.augment.babble.speakers must be whole (lo, hi) with "
                             f"1 <= lo <= hi <= 32, got {k}")

    @property
    def active(self) -> bool:
        """Whether any transform can fire."""
        return any(getattr(self, f"{n}_prob") > 0 for n in _STREAMS)


def _check_range(name: str, r: tuple[float, float], lo: float, hi: float) -> None:
    if len(r) != 2 or not lo <= r[0] <= r[1] <= hi:
        raise ValueError(f"data.augment.{name} must be (lo, hi) with {lo} <= lo <= hi <= {hi}, got {r}")


# Config groups -> {config field: AugmentSettings field}.
_FIELDS = {
    "speed": {"prob": "speed_prob", "factors": "speed_factors"},
    "pitch": {"prob": "pitch_prob", "semitones": "pitch_semitones"},
    "reverb": {"prob": "reverb_prob", "rt60": "reverb_rt60", "room_min": "reverb_room_min",
               "room_max": "reverb_room_max"},
    "noise": {"prob": "noise_prob", "snr_db": "noise_snr_db", "colours": "noise_colours"},
    "babble": {"prob": "babble_prob", "snr_db": "babble_snr_db", "speakers": "babble_speakers"},
    "telephone": {"prob": "telephone_prob"},
    "mix": {"prob": "mix_prob", "max_fraction": "mix_max_fraction", "energy_db": "mix_energy_db"},
}


def settings_from_config(config: Mapping[str, Any] | AugmentSettings | None) -> AugmentSettings:
    """`AugmentSettings` from a `data.augment` config (ConfigDict or nested dict); None = all off.

    Missing fields keep their defaults (all transforms off); an unknown field is an error that
    names the valid ones.
    """
    if config is None:
        return AugmentSettings()
    if isinstance(config, AugmentSettings):
        return config
    kw: dict[str, Any] = {}
    for group, value in dict(config).items():
        if group == "clean_copy":
            kw["clean_copy"] = bool(value)
            continue
        if group not in _FIELDS:
            raise ValueError(f"unknown field data.augment.{group}; valid fields: "
                             f"{sorted([*_FIELDS, 'clean_copy'])}")
        if not isinstance(value, Mapping) and not hasattr(value, "items"):
            raise ValueError(f"data.augment.{group} must be a group of fields "
                             f"{sorted(_FIELDS[group])}, got {value!r}")
        for key, v in dict(value).items():
            if key not in _FIELDS[group]:
                raise ValueError(f"unknown field data.augment.{group}.{key}; valid fields: "
                                 f"{sorted(_FIELDS[group])}")
            kw[_FIELDS[group][key]] = tuple(v) if isinstance(v, (list, tuple)) else float(v)
    if "babble_speakers" in kw:
        kw["babble_speakers"] = tuple(int(k) if float(k).is_integer() else k
                                      for k in kw["babble_speakers"])
    return AugmentSettings(**kw)


# ----------------------------------------------------------------------------- transforms


def speed_perturb(wav: np.ndarray, factor: float) -> np.ndarray:
    """Plays `wav` [samples] `factor` times faster by resampling: [round(samples / factor)]."""
    wav = np.asarray(wav, np.float32)
    if factor == 1.0 or wav.size == 0:
        return wav
    return soxr.resample(wav, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32, copy=False)


def time_stretch(wav: np.ndarray, out_len: int) -> np.ndarray:
    """WSOLA: `wav` [samples] -> [out_len] with the same local waveform (pitch, formants).

    Hann frames of `_WSOLA_FRAME` samples overlap by half in the output; each input frame is
    taken within +-`_WSOLA_TOL` of its nominal position where it best continues the previous
    one: normalised cross-correlation on every `_WSOLA_STEP`-th sample and lag, then plain
    cross-correlation at full rate around the best lag.
    """
    x = np.asarray(wav, np.float32)
    n, out_len = x.size, int(out_len)
    if out_len <= 0:
        return np.zeros((max(out_len, 0),), np.float32)
    if n == 0:
        return np.zeros((out_len,), np.float32)
    N, H, T, D = _WSOLA_FRAME, _WSOLA_HOP, _WSOLA_TOL, _WSOLA_STEP
    rate = n / out_len
    frames = -(-(out_len + H) // H)
    # Frame k lands at output [k H - H, k H - H + N); its nominal input start is (k H - H) rate.
    pad = T + N + D + int(math.ceil(H * rate))
    pad -= pad % D
    nominal = pad + np.round((np.arange(frames) * H - H) * rate / D).astype(np.int64) * D
    xp = np.zeros((int(nominal[-1]) + T + 2 * N + H + 2 * D,), np.float32)
    xp[pad:pad + n] = x
    xd = np.ascontiguousarray(xp[::D])
    Nd, span = N // D, 2 * T // D + 1
    energy = np.concatenate([[0.0], np.cumsum(xd.astype(np.float64) ** 2)])
    inv_norm = (1.0 / np.sqrt(energy[Nd:] - energy[:-Nd] + 1e-6)).astype(np.float32)
    corr = np.correlate
    pos = [int(nominal[0])]
    prev = pos[0]
    for s in ((nominal[1:] - T) // D).tolist():
        c = corr(xd[s:s + span + Nd - 1], xd[(prev + H) // D:(prev + H) // D + Nd])
        c *= inv_norm[s:s + span]
        p = (s + int(c.argmax())) * D - D // 2
        prev = p + int(corr(xp[p:p + D + N], xp[prev + H:prev + H + N]).argmax())
        pos.append(prev)
    pos = np.asarray(pos, np.int64)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N) / N)).astype(np.float32)
    taken = xp[pos[:, None] + np.arange(N)] * window  # [frames, N]; two halves of H
    out = np.zeros((frames + 1, H), np.float32)
    out[:-1] += taken[:, :H]
    out[1:] += taken[:, H:]
    return out.reshape(-1)[H:H + out_len]


def pitch_shift(wav: np.ndarray, semitones: float) -> np.ndarray:
    """Shifts pitch and formants by 2^(semitones/12), keeping the duration: [samples] -> same."""
    wav = np.asarray(wav, np.float32)
    if semitones == 0.0 or wav.size == 0:
        return wav
    return time_stretch(speed_perturb(wav, 2.0 ** (semitones / 12.0)), wav.size)


def _images(src: np.ndarray, mic: np.ndarray, dims: np.ndarray, order: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Distances [images] and reflection counts [images] of every image up to `order`."""
    n = np.arange(-order - 1, order + 2)
    # Per axis, parity u in {0, 1}: image coordinate (1 - 2u) s + 2 n L, reflections |n - u| + |n|.
    coord = (1 - 2 * np.array([0, 1])[None, :, None]) * src[None, None, :] \
        + 2 * n[:, None, None] * dims[None, None, :]  # [n, u, axis]
    refl = np.abs(n[:, None] - np.array([0, 1])[None, :]) + np.abs(n[:, None])  # [n, u]
    delta = (coord - mic).reshape(-1, 3) ** 2  # [(n, u), axis]
    refl = refl.reshape(-1)
    d2 = delta[:, None, None, 0] + delta[None, :, None, 1] + delta[None, None, :, 2]
    r = refl[:, None, None] + refl[None, :, None] + refl[None, None, :]
    keep = r <= order + 1
    return np.sqrt(d2[keep]), r[keep]


def room_impulse_response(rng: np.random.Generator, rt60: float,
                          room_min: tuple[float, float, float],
                          room_max: tuple[float, float, float]) -> np.ndarray:
    """`shoebox_rir` of a random room: sides uniform between `room_min` and `room_max` (metres),
    source and microphone uniform inside, `_RIR_MARGIN` from the walls."""
    dims = rng.uniform(room_min, room_max)
    src = rng.uniform(_RIR_MARGIN, dims - _RIR_MARGIN)
    mic = rng.uniform(_RIR_MARGIN, dims - _RIR_MARGIN)
    return shoebox_rir(rng, dims, src, mic, rt60)


def shoebox_rir(rng: np.random.Generator, dims: np.ndarray, source: np.ndarray, mic: np.ndarray,
                rt60: float) -> np.ndarray:
    """Impulse response `[taps]` of a shoebox room, direct path at tap 0 with gain 1.

    The image sources up to `_RIR_ORDER` reflections are exact (Allen & Berkley; fractional
    delays by linear interpolation, walls of pressure reflection sqrt(1 - alpha) with Sabine's
    alpha for `rt60`); from the arrival of the first image of the next order on, the response
    is Gaussian noise (from `rng`) with variance c / (4 pi V fs) exp(-13.8 t / RT60) relative to
    a unit source at 1 m: the density of image energy arriving at time t in a room of volume V.
    The response ends where that envelope is 60 dB down (at most `_RIR_MAX_SECONDS`).

    Args:
        rng: draws the late tail.
        dims: room sides [3] in metres; source, mic: positions [3] inside the room.
        rt60: reverberation time in seconds.
    """
    dims, src, mic = (np.asarray(v, np.float64) for v in (dims, source, mic))
    if not ((src > 0) & (src < dims) & (mic > 0) & (mic < dims)).all():
        raise ValueError(f"source {src} and microphone {mic} must lie inside the room {dims}")
    volume = float(np.prod(dims))
    surface = 2.0 * (dims[0] * dims[1] + dims[1] * dims[2] + dims[0] * dims[2])
    absorption = min(0.161 * volume / (surface * rt60), 0.99)  # Sabine
    beta = math.sqrt(1.0 - absorption)
    dist, refl = _images(src, mic, dims, _RIR_ORDER)
    dist = np.maximum(dist, 0.05)
    delay = dist / SPEED_OF_SOUND * SAMPLE_RATE
    t0 = float(delay[refl == 0][0])
    t_mix = float(delay[refl == _RIR_ORDER + 1].min())
    early = (refl <= _RIR_ORDER) & (delay < t_mix)
    taps = int(min(max(rt60 * SAMPLE_RATE, t_mix) - t0, _RIR_MAX_SECONDS * SAMPLE_RATE)) + 2
    rel = delay[early] - t0  # direct path at tap 0
    amp = beta ** refl[early] / (4 * math.pi * dist[early])
    lo = np.floor(rel).astype(np.int64)
    frac = rel - lo
    h = np.bincount(lo, amp * (1 - frac), minlength=taps)[:taps]
    h += np.bincount(lo + 1, amp * frac, minlength=taps)[:taps]
    start = int(math.ceil(t_mix - t0))
    if start < taps:
        t = (np.arange(start, taps) + t0) / SAMPLE_RATE
        sigma = math.sqrt(SPEED_OF_SOUND / (4 * math.pi * volume * SAMPLE_RATE)) \
            * np.exp(-6.908 * t / rt60)
        h[start:] += sigma * rng.standard_normal(taps - start)
    return (h / h[0]).astype(np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`wav` [samples] convolved with `rir` [taps] (direct path at tap 0), cut to [samples],
    rescaled to the input's RMS."""
    x = np.asarray(wav, np.float32)
    n = x.size
    if n == 0:
        return x
    size = scipy.fft.next_fast_len(n + rir.size - 1, real=True)
    y = scipy.fft.irfft(scipy.fft.rfft(x, size) * scipy.fft.rfft(rir.astype(np.float32), size),
                        size)[:n]
    return (y * _rms(x) / max(_rms(y), _EPS)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    x = np.asarray(x, np.float32)
    return math.sqrt(float(np.dot(x, x)) / x.size) if x.size else 0.0


def coloured_noise(rng: np.random.Generator, samples: int, beta: float) -> np.ndarray:
    """Gaussian noise [samples] with power spectrum ~ 1/f^beta (no DC), unit RMS."""
    spec = rng.standard_normal(samples // 2 + 1) + 1j * rng.standard_normal(samples // 2 + 1)
    f = np.arange(samples // 2 + 1, dtype=np.float64)
    f[0] = np.inf
    spec *= f ** (-beta / 2.0)
    x = np.fft.irfft(spec, samples)
    return (x / max(_rms(x), _EPS)).astype(np.float32)


def add_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`wav` + `noise` (both [samples]) scaled to `snr_db` (mean powers over all samples).

    Silence (zero power) is returned unchanged: an SNR has no meaning there.
    """
    x = np.asarray(wav, np.float32)
    p_signal, p_noise = _rms(x) ** 2, _rms(noise) ** 2
    if p_signal <= 0.0 or p_noise <= 0.0:
        return x
    gain = math.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (x + gain * noise).astype(np.float32)


def mu_law(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """G.711-style mu-law companding of `x` in [-1, 1] to 2^bits levels and back."""
    y = np.sign(x) * np.log1p(_MU * np.abs(x)) / math.log1p(_MU)
    levels = 2 ** bits - 1
    y = np.round((y + 1) * (levels / 2)) * (2 / levels) - 1
    return (np.sign(y) * np.expm1(np.abs(y) * math.log1p(_MU)) / _MU).astype(np.float32)


def telephone(wav: np.ndarray) -> np.ndarray:
    """Telephone channel: 8 kHz sampling with 8-bit mu-law at full scale, back to 16 kHz."""
    x = np.asarray(wav, np.float32)
    n = x.size
    if n == 0:
        return x
    y = soxr.resample(x, SAMPLE_RATE, 8000)
    peak = float(np.abs(y).max()) if y.size else 0.0
    if peak <= 0.0:
        return np.zeros_like(x)
    y = mu_law(np.clip(y / peak, -1.0, 1.0)) * peak
    z = soxr.resample(y, 8000, SAMPLE_RATE)
    if z.size >= n:
        return np.ascontiguousarray(z[:n], np.float32)
    return np.pad(z, (0, n - z.size)).astype(np.float32)


def _slice(bank: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    """A random stretch of a bank track [samples], wrapped around its end, random sign/direction."""
    start = int(rng.integers(0, bank.size))
    if start + samples <= bank.size:
        out = bank[start:start + samples]
    else:
        out = bank[(start + np.arange(samples)) % bank.size]
    if rng.random() < 0.5:
        out = out[::-1]
    return out if rng.random() < 0.5 else -out


# ----------------------------------------------------------------------------- Grain transforms


def item_rng(seed: int, batch: int, row: int, transform: str) -> np.random.Generator:
    """The generator of one transform for one item: (data seed, batch number, global row)."""
    return np.random.default_rng([_u64(seed), int(batch), int(row), _SALT, _STREAMS[transform]])


class Augmenter:
    """Per-utterance augmentation with banks of noise and babble built once per process.

    Args:
        settings: the checked `data.augment` section.
        seed: the data seed; every draw derives from it.
        source: the training split (a `ShardSource`), read for babble; needed when babble is on.
    """

    def __init__(self, settings: AugmentSettings, seed: int, source: Any | None = None):
        if settings.babble_prob > 0 and source is None:
            raise ValueError("babble augmentation needs the training split's source")
        self.settings, self.seed, self.source = settings, int(seed), source
        self._noise: list[np.ndarray] | None = None
        self._babble: dict[int, np.ndarray] | None = None
        self._lock = threading.Lock()  # Grain's reader threads share one augmenter

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_noise"] = state["_babble"] = None  # rebuilt in each worker from the seed
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def noise_bank(self) -> list[np.ndarray]:
        """One unit-RMS track of `_NOISE_BANK_SECONDS` per colour in `noise_colours`."""
        with self._lock:
            if self._noise is None:
                self._noise = self._make_noise_bank()
        return self._noise

    def _make_noise_bank(self) -> list[np.ndarray]:
        samples = int(_NOISE_BANK_SECONDS * SAMPLE_RATE)
        return [coloured_noise(np.random.default_rng([_u64(self.seed), _SALT, 100, k]),
                               samples, beta)
                for k, beta in enumerate(self.settings.noise_colours)]

    def babble_bank(self) -> dict[int, np.ndarray]:
        """Speaker count -> a unit-RMS track of `_BABBLE_BANK_SECONDS` of that many talkers.

        Each talker is a chain of random utterances of the split, each scaled to unit RMS.
        """
        with self._lock:
            if self._babble is None:
                self._babble = self._make_babble_bank()
        return self._babble

    def _make_babble_bank(self) -> dict[int, np.ndarray]:
        rng = np.random.default_rng([_u64(self.seed), _SALT, 200])
        samples = int(_BABBLE_BANK_SECONDS * SAMPLE_RATE)
        lo, hi = self.settings.babble_speakers
        usable = np.flatnonzero(np.asarray(self.source.num_samples) > 0)
        if usable.size == 0:
            raise ValueError(f"{self.source}: no utterance to make babble from")
        bank = {}
        for k in range(lo, hi + 1):
            track = np.zeros((samples,), np.float32)
            for _ in range(k):
                pieces, have, tries = [], 0, 0
                while have < samples:
                    tries += 1
                    if tries > 100 * len(usable):
                        raise ValueError(f"{self.source}: too few readable utterances for babble")
                    wav = np.asarray(self.source[int(rng.choice(usable))]["audio"], np.float32)
                    if wav.size and np.isfinite(wav).all() and _rms(wav) > 0:
                        pieces.append(wav / _rms(wav))
                        have += wav.size
                talker = np.concatenate(pieces)
                track += np.roll(talker, int(rng.integers(0, talker.size)))[:samples]
            bank[k] = track / max(_rms(track), _EPS)
        return bank

    def speed_factor(self, batch: int, row: int) -> float:
        """The speed factor of one item (1.0 when speed perturbation does not fire)."""
        s = self.settings
        rng = self._fires("speed", s.speed_prob, batch, row)
        if rng is None:
            return 1.0
        return float(s.speed_factors[int(rng.integers(len(s.speed_factors)))])

    def _fires(self, transform: str, prob: float, batch: int, row: int) -> np.random.Generator | None:
        """The item's generator for `transform` when the transform fires (its first draw
        decides), else None."""
        if prob <= 0:
            return None
        rng = item_rng(self.seed, batch, row, transform)
        return rng if rng.random() < prob else None

    def mix(self, wavs: list[np.ndarray | None], batch: int, rows: list[int]) -> list[np.ndarray | None]:
        """Utterance mixing over one batch's crops (None = empty item): for each item it fires
        on, a segment of another non-empty crop of the batch added to it (see the module
        docstring). The result for an item depends on the crops as they came in only."""
        s = self.settings
        out = list(wavs)
        others = [j for j, w in enumerate(wavs) if w is not None and w.size > 0]
        for b, wav in enumerate(wavs):
            if wav is None or wav.size < 2 or len(others) < 2:
                continue
            rng = self._fires("mix", s.mix_prob, batch, rows[b])
            if rng is None:
                continue
            j = others[int(rng.integers(len(others) - 1))]
            j = others[-1] if j == b else j  # a uniform choice among the other items
            src = wavs[j]
            length = int(rng.integers(1, max(2, int(s.mix_max_fraction * wav.size) + 1)))
            length = min(length, src.size)
            seg = src[int(rng.integers(0, src.size - length + 1)):][:length]
            at = int(rng.integers(0, wav.size - length + 1))
            ratio_db = float(rng.uniform(*s.mix_energy_db))
            p_primary, p_seg = _rms(wav) ** 2, _rms(seg) ** 2
            if p_primary <= 0.0 or p_seg <= 0.0:
                continue
            gain = math.sqrt(p_primary / (p_seg * 10.0 ** (ratio_db / 10.0)))
            mixed = np.array(wav, np.float32)
            mixed[at:at + length] += gain * seg
            out[b] = mixed
        return out

    def __call__(self, wav: np.ndarray, batch: int, row: int) -> np.ndarray:
        """Pitch, reverberation, babble, noise, telephone (each if it fires) on one crop [samples]."""
        s = self.settings
        x = np.asarray(wav, np.float32)
        if x.size == 0:
            return x
        if (rng := self._fires("pitch", s.pitch_prob, batch, row)) is not None:
            x = pitch_shift(x, float(rng.uniform(*s.pitch_semitones)))
        if (rng := self._fires("reverb", s.reverb_prob, batch, row)) is not None:
            rir = room_impulse_response(rng, float(rng.uniform(*s.reverb_rt60)),
                                        s.reverb_room_min, s.reverb_room_max)
            x = reverberate(x, rir)
        if (rng := self._fires("babble", s.babble_prob, batch, row)) is not None:
            lo, hi = s.babble_speakers
            track = self.babble_bank()[int(rng.integers(lo, hi + 1))]
            x = add_noise(x, _slice(track, rng, x.size), float(rng.uniform(*s.babble_snr_db)))
        if (rng := self._fires("noise", s.noise_prob, batch, row)) is not None:
            bank = self.noise_bank()
            track = bank[int(rng.integers(len(bank)))]
            x = add_noise(x, _slice(track, rng, x.size), float(rng.uniform(*s.noise_snr_db)))
        if self._fires("telephone", s.telephone_prob, batch, row) is not None:
            x = telephone(x)
        return x


class SpeedPerturb(grain.transforms.Map):
    """Grain stage before the crop: resamples whole utterances by each item's speed factor.

    Element (the pipeline's batch under construction): `batch` int (batch number in the
    stream), `rows` int[batch] (global row of each item), `wavs` list of [samples] float32 or
    None (empty item). Sets `wavs` to the perturbed utterances and `speed` f32[batch].
    """

    def __init__(self, augmenter: Augmenter):
        self.augmenter = augmenter

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        factors = np.ones((len(element["wavs"]),), np.float32)
        for b, wav in enumerate(element["wavs"]):
            if wav is None:
                continue
            factors[b] = self.augmenter.speed_factor(element["batch"], element["rows"][b])
            element["wavs"][b] = speed_perturb(wav, float(factors[b]))
        element["speed"] = factors
        return element


class Augment(grain.transforms.Map):
    """Grain stage after the crop: utterance mixing, then pitch, reverberation, babble, noise and
    telephone per item.

    Element as for `SpeedPerturb`, `wavs` now the crops. With `clean_copy`, sets `clean` to the
    crops as they came in. A non-finite result (never expected) falls back to the clean crop.
    """

    def __init__(self, augmenter: Augmenter):
        self.augmenter = augmenter

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        clean = list(element["wavs"])
        rows = [int(r) for r in element["rows"]]
        mixed = self.augmenter.mix(clean, element["batch"], rows) if self.augmenter.settings.mix_prob > 0 else clean
        for b, wav in enumerate(mixed):
            if wav is None:
                continue
            out = self.augmenter(wav, element["batch"], element["rows"][b])
            if not np.isfinite(out).all():
                log.warning("augmentation of batch %d row %d gave non-finite samples; kept it clean",
                            element["batch"], element["rows"][b])
                out = clean[b]
            element["wavs"][b] = out
        if self.augmenter.settings.clean_copy:
            element["clean"] = clean
        return element
