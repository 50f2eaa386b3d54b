"""ViT over log-mel patches, the encoder of Masked Modeling Duo (M2D; Niizumi et al., ICASSP 2023,
and its TASLP 2024 extension), after MAE's ViT (He et al., 2022) and MSM-MAE.

Log-mel frames (10 ms hop, scalar standardisation by dataset statistics) are cut into patches
of `patch_freq` bands x `patch_time` frames, embedded by one linear layer plus fixed 2-D sin-cos
positions, prepended with a learned [CLS] token and run through pre-LN Transformer blocks and
a final LayerNorm. The encoder runs on the whole grid (`__call__`, what `Upstream` sees) or on
a subset of patches given as indices (`encode_patches`, what the M2D objective runs on the
visible and on the masked patches). As M2D's frame-level features, the hidden states of a time
step are the concatenation of its frequency patches' vectors, low band first:
[batch, time_patches, freq_patches * dim]; the [CLS] token is not among them. `pooled` is
the mean of the last frame features over an utterance's valid time steps (M2D's clip
embedding).

Padding: only whole valid patches count (a time patch needs `patch_time` valid log-mel frames,
as `frame_lengths` says); padded patches are never attended to, so an utterance's output never
depends on the padding around it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.config_fields import from_section
from ssl_jax.models.encoder import EncoderOutput
from ssl_jax.models.frontends import NORMS, LogMelFrontend, logmel_frame_lengths
from ssl_jax.models.transformer import ACTIVATION_AXES, EncoderLayer, layer_norm, remat_layer, remat_policy
from ssl_jax.parallel.sharding import constrain


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyper-parameters of the patch encoder (`model.*` with `model.architecture = "patches"`).

    Defaults are M2D's ViT-Base on 16 x 16 patches of 80-band log-mel frames.
    """

    architecture: str = "patches"
    frontend: str = "logmel"
    logmel_bins: int = 80
    logmel_window: int = 400  # 25 ms Hann window
    logmel_hop: int = 160  # 10 ms
    logmel_norm: str = "none"  # "utterance": per-utterance standardisation of every band first
    logmel_mean: float = 0.0  # dataset statistics: (log-mel - mean) / std
    logmel_std: float = 1.0
    patch_freq: int = 16  # bands per patch
    patch_time: int = 16  # frames per patch
    dim: int = 768  # token width (Upstream's frame size is freq_patches * dim)
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    dtype: str = "float32"
    remat: str = "none"  # transformer.REMAT_POLICIES

    def __post_init__(self):
        if self.architecture != "patches":
            raise ValueError(f"patch_encoder.Config is the 'patches' architecture, got {self.architecture!r}")
        if self.frontend != "logmel":
            raise ValueError(f"the patch encoder reads log-mel frames: model.frontend must be 'logmel', got {self.frontend!r}")
        if self.logmel_norm not in NORMS:
            raise ValueError(f"model.logmel_norm must be one of {NORMS}, got {self.logmel_norm!r}")
        if not self.logmel_std > 0:
            raise ValueError(f"model.logmel_std must be > 0, got {self.logmel_std}")
        for name in ("logmel_bins", "logmel_window", "logmel_hop", "patch_freq", "patch_time", "dim", "num_layers",
                     "num_heads", "intermediate_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.logmel_bins % self.patch_freq:
            raise ValueError(f"model.patch_freq={self.patch_freq} must divide model.logmel_bins={self.logmel_bins}")
        if self.dim % 4:
            raise ValueError(f"model.dim must be a multiple of 4 (2-D sin-cos positions), got {self.dim}")
        if self.dim % self.num_heads:
            raise ValueError(f"model.dim={self.dim} is not divisible by model.num_heads={self.num_heads}")
        jnp.dtype(self.dtype)  # raises on an unknown dtype name
        object.__setattr__(self, "remat", remat_policy(self.remat))

    @classmethod
    def from_config(cls, cfg: Any) -> "Config":
        """Builds from a ConfigDict or mapping; unknown keys are an error naming the valid ones."""
        return from_section(cls, cfg, "model (architecture 'patches')")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def freq_patches(self) -> int:
        return self.logmel_bins // self.patch_freq

    @property
    def patch_dim(self) -> int:
        """Log-mel values per patch."""
        return self.patch_freq * self.patch_time

    @property
    def hidden_size(self) -> int:
        """Size of a frame of the hidden states: `freq_patches * dim`."""
        return self.freq_patches * self.dim

    @property
    def downsampling(self) -> int:
        """Samples per frame (one time patch)."""
        return self.logmel_hop * self.patch_time

    def frame_lengths(self, sample_lengths):
        """Valid time patches for `sample_lengths` (numpy or jax int array, any shape)."""
        return logmel_frame_lengths(sample_lengths, self.logmel_window, self.logmel_hop, self.patch_time)

    def time_patches(self, num_samples: int) -> int:
        """Time patches of a padded batch `num_samples` wide."""
        return int(self.frame_lengths(np.asarray([num_samples]))[0])


def patchify(cfg: Config, wavs: jax.Array, audio_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Standardised log-mel patches of a padded batch (no parameters).

    Args:
      cfg: `Config`.
      wavs: [batch, samples] float32 16 kHz; audio_mask: bool[batch, samples] (a prefix per row).
    Returns:
      patches: [batch, time_patches, freq_patches, patch_time * patch_freq] (0 on padding);
      time_mask: bool[batch, time_patches], True = a whole valid time patch.
    """
    audio_mask = audio_mask.astype(bool)
    wavs = jnp.where(audio_mask, wavs, 0.0)
    t = cfg.time_patches(wavs.shape[1])
    if t == 0:
        raise ValueError(f"{wavs.shape[1]} samples are too few for one patch of {cfg.patch_time} log-mel frames")
    # parent=None: a standalone (parameter-free) module even when called inside another's method.
    frontend = LogMelFrontend(cfg.logmel_bins, cfg.logmel_window, cfg.logmel_hop, 1, cfg.logmel_norm, parent=None)
    mel, _ = frontend.apply({}, wavs, audio_mask.sum(-1))  # [batch, frames, bins]
    time_mask = jnp.arange(t)[None, :] < cfg.frame_lengths(audio_mask.sum(-1).astype(jnp.int32))[:, None]
    b, f = wavs.shape[0], cfg.freq_patches
    x = (mel[:, : t * cfg.patch_time] - cfg.logmel_mean) / cfg.logmel_std
    x = x.reshape(b, t, cfg.patch_time, f, cfg.patch_freq).transpose(0, 1, 3, 2, 4).reshape(b, t, f, cfg.patch_dim)
    return jnp.where(time_mask[:, :, None, None], x, 0.0), time_mask


def sincos_positions(index: jax.Array, freq_patches: int, dim: int) -> jax.Array:
    """Fixed 2-D sin-cos positions (MAE's) of flat patch indices `index` (any shape, int).

    A flat index is `time * freq_patches + freq`; the first half of the channels encodes the
    time position and the second half the frequency position, each as sines then cosines of
    `dim / 4` frequencies 1 / 10000**(k / (dim / 4)). Returns float32 [*index.shape, dim].
    """
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (jnp.arange(quarter, dtype=jnp.float32) / quarter)

    def one_axis(pos):
        a = pos.astype(jnp.float32)[..., None] * omega
        return jnp.concatenate([jnp.sin(a), jnp.cos(a)], axis=-1)

    return jnp.concatenate([one_axis(index // freq_patches), one_axis(index % freq_patches)], axis=-1)


def frames_of(x: jax.Array, freq_patches: int) -> jax.Array:
    """Patch vectors in grid order [batch, time * freq, dim] -> frames [batch, time, freq * dim]."""
    return x.reshape(x.shape[0], x.shape[1] // freq_patches, freq_patches * x.shape[2])


class Encoder(nn.Module):
    """The patch ViT: `__call__` on the whole grid (frames), `encode_patches` on a subset.

    Attributes:
      config: `Config`.
    """

    config: Config

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.patch_embed = nn.Dense(
            cfg.dim,
            dtype=dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), (None, "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        )
        self.cls_token = self.param("cls_token", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed",)),
                                    (cfg.dim,))
        layer_cls = remat_layer(EncoderLayer, cfg.remat, static_argnums=(4,))
        self.layers = [
            layer_cls(cfg.dim, cfg.num_heads, cfg.intermediate_size, layer_norm_first=True, dtype=dtype)
            for _ in range(cfg.num_layers)
        ]
        self.layer_norm = layer_norm(dtype, "layer_norm")

    def encode_patches(
        self, patches: jax.Array, index: jax.Array, valid: jax.Array, deterministic: bool = True
    ) -> tuple[tuple[jax.Array, ...], jax.Array, jax.Array]:
        """Encodes the patches at `index` only; the others are never read.

        Args:
          patches: [batch, num_patches, patch_dim] (grid order, `patchify` flattened).
          index: int32[batch, kept], flat patch indices (`time * freq_patches + freq`).
          valid: bool[batch, kept]; False entries are padding, never attended to.
          deterministic: unused (the blocks have no dropout); kept for the common signature.
        Returns:
          hidden_states: num_layers + 1 arrays [batch, kept, dim] (the embedded patches, then
            every block's output, the last before the final LayerNorm);
          last: [batch, kept, dim] after the final LayerNorm;
          cls: [batch, dim], the [CLS] token after the final LayerNorm.
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        picked = jnp.take_along_axis(patches, index[..., None], axis=1).astype(dtype)
        x = self.patch_embed(picked) + sincos_positions(index, cfg.freq_patches, cfg.dim).astype(dtype)
        x = jnp.where(valid[..., None], x, 0.0)
        b = x.shape[0]
        # The [CLS] token sits at position zero (MAE's zero positional vector).
        x = jnp.concatenate([jnp.broadcast_to(self.cls_token.astype(dtype), (b, 1, cfg.dim)), x], axis=1)
        mask = jnp.concatenate([jnp.ones((b, 1), bool), valid.astype(bool)], axis=1)
        x = constrain(x, ACTIVATION_AXES)
        hidden = [x[:, 1:]]
        for layer in self.layers:
            x = layer(x, mask, None, deterministic)
            hidden.append(x[:, 1:])
        y = self.layer_norm(x)
        return tuple(hidden), y[:, 1:], y[:, 0]

    def __call__(
        self,
        wavs: jax.Array,
        audio_mask: jax.Array,
        *,
        mask_time_indices: jax.Array | None = None,
        deterministic: bool = True,
    ) -> EncoderOutput:
        """Encodes a padded batch on the whole patch grid.

        Args:
          wavs: [batch, samples] float32 16 kHz audio.
          audio_mask: bool[batch, samples], True = real sample (a prefix of each row).
          mask_time_indices: optional bool[batch, frames]: the patches of these time steps are
            removed from attention (never seen by the others), as M2D's online encoder drops
            masked patches.
          deterministic: unused (no dropout).
        Returns:
          `EncoderOutput` with frames = time patches: hidden_states [batch, frames,
          freq_patches * dim] (num_layers + 1 of them), frame_mask, features (the standardised
          log-mel patches, [batch, frames, freq_patches * patch_dim]), feature_penalty 0,
          last_hidden_state (after the final LayerNorm) and pooled [batch, freq_patches * dim].
        """
        cfg = self.config
        patches, time_mask = patchify(cfg, wavs, audio_mask)
        b, t, f, p = patches.shape
        seen = time_mask
        if mask_time_indices is not None:
            if mask_time_indices.shape != time_mask.shape:
                raise ValueError(f"mask_time_indices has shape {mask_time_indices.shape}, expected {time_mask.shape}")
            seen = time_mask & ~mask_time_indices.astype(bool)
        index = jnp.broadcast_to(jnp.arange(t * f, dtype=jnp.int32), (b, t * f))
        valid = jnp.repeat(seen, f, axis=1)
        hidden, last, _ = self.encode_patches(patches.reshape(b, t * f, p), index, valid, deterministic)
        m = time_mask[..., None]
        hidden = tuple(jnp.where(m, frames_of(h, f), 0.0) for h in hidden)
        last = jnp.where(m, frames_of(last, f), 0.0)
        n = jnp.maximum(time_mask.sum(1, keepdims=True), 1).astype(last.dtype)
        return EncoderOutput(
            hidden_states=hidden,
            frame_mask=time_mask,
            features=patches.reshape(b, t, f * p),
            feature_penalty=jnp.zeros((), jnp.float32),
            last_hidden_state=last,
            pooled=last.sum(1) / n,
        )
