"""BYOL-A's convolutional audio encoders (`model.architecture = "audio_cnn"`).

AudioNTT2020 (Niizumi et al., 2021, "BYOL for Audio", Sec. 3.3; `version=1`) and AudioNTT2022
(Niizumi et al., 2023, "BYOL for Audio: Exploring Pre-trained General-purpose Audio
Representations", Sec. 3.2; `version=2`): a normalised log-mel spectrogram [frames, bins] goes
through blocks of 3x3 conv (64 channels) -> norm -> ReLU -> 2x2 max pooling; each pooled frame's
channels x bins become one vector, and a frame-wise MLP (Linear -> ReLU -> Dropout -> Linear ->
ReLU) follows. Version 2 concatenates the conv features with the MLP output (local + global
features). The clip embedding is the temporal mean plus the temporal max of the output frames.

Deviations, all documented in `Config`:
* Normalisation of the input: the papers standardise log-mel with one mean and standard
  deviation of the whole pre-training set; here every utterance is standardised by the mean and
  standard deviation of its own valid log-mel values (`input_norm="utterance"`, one scalar
  pair per utterance, computed in the graph, padding excluded) or per mel band
  (`input_norm="band"`, CMVN).
* BatchNorm2d in the conv blocks needs running statistics the trainer does not keep; every
  block normalises each frame over its frequency bins and channels instead (a LayerNorm with a
  learned scale and bias per channel). It uses no batch statistics, so train and eval agree and
  an utterance's output never depends on the rest of the batch or on padding.
* Time pooling per block is configurable (`time_pool`), so a recipe can keep a finer frame
  rate than the papers' 2x per block (12.5 Hz for version 1, 25 Hz for version 2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.config_fields import from_section
from ssl_jax.models.encoder import EncoderOutput
from ssl_jax.models.frontends import LogMelFrontend, logmel_frame_lengths
from ssl_jax.parallel.sharding import constrain

INPUT_NORMS = ("utterance", "band")
_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Config:
    """Encoder hyper-parameters; defaults are AudioNTT2022 of BYOL-A v2 (d = 3072).

    Attributes:
      version: 1 (AudioNTT2020: MLP output only) or 2 (AudioNTT2022: conv features and MLP
        output concatenated).
      logmel_bins, logmel_window, logmel_hop: log-mel front end (models/frontends.py, one frame
        per hop; papers: 64 bins, 1024-sample window, 10 ms hop).
      input_norm: "utterance" (one mean and std per utterance) or "band" (per mel band).
      conv_channels: channels of every conv block (64).
      time_pool: time pooling of each conv block, one entry per block (version 1: (2, 2, 2),
        version 2: (2, 2)); frequency is always pooled by 2.
      mlp_hidden: width of the first MLP layer (version 1: = hidden_size; version 2: 2048).
      hidden_size: output width d (version 1: the second MLP layer; version 2: conv features +
        second MLP layer).
      dropout: dropout after the first MLP layer (0.3).
      dtype: compute dtype (parameters stay float32).
    """

    version: int = 2
    logmel_bins: int = 64
    logmel_window: int = 1024
    logmel_hop: int = 160
    input_norm: str = "utterance"
    conv_channels: int = 64
    time_pool: tuple[int, ...] = (2, 2)
    mlp_hidden: int = 2048
    hidden_size: int = 3072
    dropout: float = 0.3
    dtype: str = "float32"
    frontend: str = "logmel"
    architecture: str = "audio_cnn"

    def __post_init__(self):
        object.__setattr__(self, "time_pool", tuple(int(p) for p in self.time_pool))
        if self.architecture != "audio_cnn":
            raise ValueError(f"audio_cnn.Config is the 'audio_cnn' architecture, got {self.architecture!r}")
        if self.frontend != "logmel":
            raise ValueError(f"the audio_cnn encoder reads log-mel frames: model.frontend must be 'logmel', "
                             f"got {self.frontend!r}")
        if self.version not in (1, 2):
            raise ValueError(f"model.version must be 1 (AudioNTT2020) or 2 (AudioNTT2022), got {self.version!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"model.input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if not self.time_pool or any(p < 1 for p in self.time_pool):
            raise ValueError(f"model.time_pool needs one pooling factor >= 1 per conv block, got {self.time_pool}")
        if self.logmel_bins // 2 ** len(self.time_pool) < 1:
            raise ValueError(f"{self.logmel_bins} mel bins are too few for {len(self.time_pool)} poolings by 2")
        if min(self.conv_channels, self.mlp_hidden, self.hidden_size, self.logmel_hop, self.logmel_window) < 1:
            raise ValueError("conv_channels, mlp_hidden, hidden_size, logmel_hop and logmel_window must be positive")
        if self.version == 1 and max(self.conv_dim, self.mlp_hidden) > self.hidden_size:
            raise ValueError(f"version 1 needs conv features ({self.conv_dim}) and mlp_hidden ({self.mlp_hidden}) "
                             f"no wider than hidden_size ({self.hidden_size})")
        if self.version == 2 and self.conv_dim + self.mlp_hidden > self.hidden_size:
            raise ValueError(f"version 2 needs conv features ({self.conv_dim}) + mlp_hidden ({self.mlp_hidden}) "
                             f"<= hidden_size ({self.hidden_size}); the paper: 1024 + 2048 = 3072")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout}")
        jnp.dtype(self.dtype)  # raises on an unknown dtype name

    @classmethod
    def from_config(cls, cfg: Any) -> "Config":
        """Builds from a ConfigDict or mapping; unknown keys are an error naming the valid ones."""
        return from_section(cls, cfg, "model (architecture 'audio_cnn')")

    def to_dict(self) -> dict:
        """A JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def num_layers(self) -> int:
        """MLP layers; `hidden_states` has num_layers + 1 entries (the conv features first)."""
        return 2

    @property
    def conv_dim(self) -> int:
        """Width of a frame after the conv blocks: channels x pooled bins."""
        return self.conv_channels * (self.logmel_bins // 2 ** len(self.time_pool))

    @property
    def pooling(self) -> str:
        """How the clip embedding pools frames (`upstream.pool_frames`): temporal mean + max."""
        return "mean+max"

    @property
    def downsampling(self) -> int:
        """Samples per output frame."""
        return self.logmel_hop * math.prod(self.time_pool)

    def frame_lengths(self, sample_lengths):
        """Valid output frames for `sample_lengths` (numpy or jax ints, any shape)."""
        xp = jnp if isinstance(sample_lengths, jax.Array) else np
        n = logmel_frame_lengths(sample_lengths, self.logmel_window, self.logmel_hop, 1)
        for p in self.time_pool:
            n = n // p
        return xp.asarray(n).astype(xp.int32)


def _standardize(x: jax.Array, valid: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """(x - mean) / std over the valid frames and `axes` of x [batch, frames, bins]; 0 on padding."""
    m = valid[..., None].astype(jnp.float32)
    count = jnp.maximum((m * jnp.ones_like(x)).sum(axes, keepdims=True), 1.0)
    mean = (x * m).sum(axes, keepdims=True) / count
    var = (jnp.square(x - mean) * m).sum(axes, keepdims=True) / count
    return (x - mean) * jax.lax.rsqrt(var + _NORM_EPS) * m


def log_mel(config: Config, wavs: jax.Array, audio_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The encoder's input: normalised log-mel frames.

    Args:
      config: the encoder `Config`.
      wavs: [batch, samples] float32 16 kHz audio; audio_mask: bool[batch, samples] (a prefix).
    Returns:
      (x float32[batch, frames, bins] standardised per `config.input_norm`, 0 on padding;
       frame_mask bool[batch, frames]).
    """
    audio_mask = audio_mask.astype(bool)
    wavs = jnp.where(audio_mask, wavs, 0.0)
    frontend = LogMelFrontend(config.logmel_bins, config.logmel_window, config.logmel_hop, 1, "none", parent=None)
    x, n = frontend.apply(
        {}, wavs, audio_mask.sum(-1))
    valid = jnp.arange(x.shape[1])[None, :] < n[:, None]
    axes = (1, 2) if config.input_norm == "utterance" else (1,)
    return _standardize(x, valid, axes), valid


class ConvBlock(nn.Module):
    """3x3 conv -> per-frame LayerNorm over (bins, channels) -> ReLU -> (time_pool x 2) max pooling.

    Attributes: channels; time_pool; dtype.
    """

    channels: int
    time_pool: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [batch, frames, bins, channels_in] (0 beyond lengths), lengths int[batch] ->
        ([batch, frames // time_pool, bins // 2, channels] with 0 beyond the new lengths, new lengths)."""
        x = nn.Conv(
            self.channels,
            kernel_size=(3, 3),
            padding="SAME",
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.he_normal(),
                                                     ("conv_kernel", None, "conv_in", "conv_channels")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_channels",)),
            name="conv",
        )(x)
        x = nn.LayerNorm(
            epsilon=_NORM_EPS,
            reduction_axes=(-2, -1),
            feature_axes=-1,
            use_fast_variance=False,
            dtype=self.dtype,
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("conv_channels",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_channels",)),
            name="norm",
        )(x)
        x = nn.max_pool(nn.relu(x), (self.time_pool, 2), strides=(self.time_pool, 2), padding="VALID")
        lengths = lengths // self.time_pool
        valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        return x * valid[:, :, None, None].astype(x.dtype), lengths


def _dense(features: int, axes: tuple[str, str], dtype: Any) -> nn.Dense:
    return nn.Dense(features, dtype=dtype,
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


def _pad_to(x: jax.Array, dim: int) -> jax.Array:
    """Right-pads the last axis of x with zeros to `dim`."""
    return x if x.shape[-1] == dim else jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, dim - x.shape[-1])])


def mean_max_pool(x: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """BYOL-A's clip embedding: temporal mean + temporal max over valid frames.

    x: [batch, frames, dim], frame_mask: bool[batch, frames] -> float32[batch, dim] (0 for an
    utterance without a valid frame).
    """
    x = x.astype(jnp.float32)
    m = frame_mask[..., None]
    n = m.sum(1)
    mean = jnp.where(m, x, 0.0).sum(1) / jnp.maximum(n, 1)
    peak = jnp.where(m, x, -jnp.inf).max(1)
    return jnp.where(n > 0, mean + peak, 0.0)


class Encoder(nn.Module):
    """AudioNTT2020 / AudioNTT2022 on waveforms (`__call__`) or on normalised log-mel (`encode`).

    Parameters: `blocks_<i>` (conv blocks), `fc1`, `fc2`.

    Attributes:
      config: `Config`.
    """

    config: Config

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.blocks = [ConvBlock(cfg.conv_channels, p, dtype) for p in cfg.time_pool]
        fc2_width = cfg.hidden_size if cfg.version == 1 else cfg.hidden_size - cfg.conv_dim
        self.fc1 = _dense(cfg.mlp_hidden, ("conv_channels", "mlp"), dtype)
        self.fc2 = _dense(fc2_width, ("mlp", "embed"), dtype)
        self.drop = nn.Dropout(cfg.dropout)

    def __call__(self, wavs: jax.Array, audio_mask: jax.Array, *, deterministic: bool = True) -> EncoderOutput:
        """Encodes a padded batch of waveforms.

        Args:
          wavs: [batch, samples] float32 16 kHz audio.
          audio_mask: bool[batch, samples], True = real sample (a prefix of each row).
          deterministic: disables dropout when True (dropout uses the `dropout` RNG).
        Returns:
          `EncoderOutput` (see `encode`).
        """
        x, frame_mask = log_mel(self.config, wavs, audio_mask)
        return self.encode(x, frame_mask, deterministic=deterministic)

    def encode(self, x: jax.Array, frame_mask: jax.Array, *, deterministic: bool = True) -> EncoderOutput:
        """Encodes normalised log-mel frames (what `log_mel` returns, possibly augmented).

        Args:
          x: [batch, frames, bins] float; frame_mask: bool[batch, frames] (a prefix of each row).
          deterministic: disables dropout when True.
        Returns:
          `EncoderOutput` at `time_pool`-reduced frames: `hidden_states` = (conv features,
          first MLP layer, output), each [batch, frames, hidden_size], narrower stages right-padded
          with zeros (version 2 puts the conv features first in every stage after them, as its
          output does); `features` the conv features [batch, frames, conv_dim]; `pooled`
          float32[batch, hidden_size] the temporal mean + max of the output.
        """
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.logmel_bins:
            raise ValueError(f"expected log-mel frames [batch, frames, {cfg.logmel_bins}], got shape {x.shape}")
        dtype = jnp.dtype(cfg.dtype)
        lengths = frame_mask.sum(-1).astype(jnp.int32)
        h = (x * frame_mask[..., None]).astype(dtype)[..., None]  # [batch, frames, bins, 1]
        for block in self.blocks:
            h, lengths = block(h, lengths)
        b, t, f, c = h.shape
        conv = h.reshape(b, t, f * c)  # bin-major: the reference's [time, bins, channels] flattening
        conv = constrain(conv, ("batch", "frames", "conv_channels"))
        mask = jnp.arange(t)[None, :] < lengths[:, None]
        m = mask[..., None].astype(dtype)
        fc1 = nn.relu(self.fc1(conv)) * m
        fc2 = nn.relu(self.fc2(self.drop(fc1, deterministic=deterministic))) * m
        d = cfg.hidden_size
        if cfg.version == 1:
            hidden = (_pad_to(conv, d), _pad_to(fc1, d), fc2)
        else:
            hidden = (_pad_to(conv, d), _pad_to(jnp.concatenate([conv, fc1], -1), d), jnp.concatenate([conv, fc2], -1))
        hidden = tuple(constrain(s, ("batch", "frames", "embed")) for s in hidden)
        return EncoderOutput(
            hidden_states=hidden,
            frame_mask=mask,
            features=conv,
            feature_penalty=jnp.zeros((), jnp.float32),
            last_hidden_state=hidden[-1],
            pooled=mean_max_pool(hidden[-1], mask),
        )
