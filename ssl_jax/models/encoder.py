"""The speech encoder shared by wav2vec 2.0, HuBERT, WavLM and data2vec-audio.

Waveform -> conv feature extractor (or stacked log-mel frames, `frontend="logmel"`) ->
LayerNorm -> projection (+ learned mask embedding) -> Transformer encoder
(Baevski et al., 2020; Hsu et al., 2021; Chen et al., 2022; Baevski et al.,
2022). The four models differ only in `EncoderConfig`: extractor norm, conv bias, LayerNorm
placement, positional conv layers and the relative position bias.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.config_fields import from_section
from ssl_jax.models.feature_extractor import LN_EPS, FeatureExtractor, conv_output_lengths
from ssl_jax.models.frontends import LogMelFrontend, UnitFrontend, logmel_frame_lengths
from ssl_jax.models.transformer import TransformerEncoder, remat_policy


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Encoder hyper-parameters; field names are those of `model_config()` in configs/w2v2_base.py.

    Defaults are wav2vec 2.0 BASE.
    """

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    frontend: str = "conv"  # "conv": the waveform extractor above; "logmel": models/frontends.py
    logmel_bins: int = 80
    logmel_window: int = 400
    logmel_hop: int = 160
    logmel_stack: int = 2
    logmel_norm: str = "none"  # "utterance": per-utterance standardisation of every band
    units: int = 0  # frontend "units": k-means units of MFCC frames (Discrete BERT's input)
    unit_dim: int = 256  # frontend "units": unit embedding size
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_first: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    num_pos_conv_layers: int = 1
    relative_position_buckets: int = 0
    relative_position_max_distance: int = 800
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.1
    feat_quantizer_dropout: float = 0.1  # pretraining only: on the quantizer's input features
    layerdrop: float = 0.05
    feature_grad_scale: float = 0.1
    num_codevector_groups: int = 2
    num_codevectors_per_group: int = 320
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    dtype: str = "float32"
    remat: str = "none"  # what a layer keeps for backward: transformer.REMAT_POLICIES
    architecture: str = "transformer"  # other encoders: ARCHITECTURES below

    def __post_init__(self):
        if self.architecture != "transformer":
            raise ValueError(f"EncoderConfig is the 'transformer' architecture, got {self.architecture!r}")
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError("conv_dim, conv_kernel and conv_stride must have the same length")
        if self.frontend not in ("conv", "logmel", "units"):
            raise ValueError(f"frontend must be 'conv', 'logmel' or 'units', got {self.frontend!r}")
        if self.frontend == "units" and self.units < 2:
            raise ValueError(f"the units front end needs model.units >= 2 (the k-means codebook size), got {self.units}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_pos_conv_layers < 1:
            raise ValueError("num_pos_conv_layers must be >= 1")
        if self.codevector_dim % self.num_codevector_groups:
            raise ValueError("codevector_dim must be divisible by num_codevector_groups")
        jnp.dtype(self.dtype)  # raises on an unknown dtype name
        object.__setattr__(self, "remat", remat_policy(self.remat))

    @classmethod
    def from_config(cls, cfg: Any) -> "EncoderConfig":
        """Builds from a ConfigDict or mapping; unknown keys are an error."""
        return from_section(cls, cfg, "model")

    def to_dict(self) -> dict:
        """A JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def downsampling(self) -> int:
        """Samples per frame (320 for the standard extractor and the default log-mel front end)."""
        if self.frontend == "logmel":
            return self.logmel_hop * self.logmel_stack
        return int(np.prod(self.conv_stride))


def frame_lengths(config: Any, sample_lengths):
    """Valid frames for `sample_lengths` (numpy or jax int array, any shape)."""
    if not isinstance(config, EncoderConfig):
        return config.frame_lengths(sample_lengths)
    if config.frontend == "logmel":
        return logmel_frame_lengths(sample_lengths, config.logmel_window, config.logmel_hop, config.logmel_stack)
    return conv_output_lengths(sample_lengths, config.conv_kernel, config.conv_stride)


class EncoderOutput(flax.struct.PyTreeNode):
    """Outputs of `SpeechEncoder`.

    Attributes:
      hidden_states: num_layers + 1 arrays [batch, frames, dim], transformers' order (index 0 is the
        first layer's input; in the pre-LN variant the last one is before the final LayerNorm).
      frame_mask: bool[batch, frames], True = real frame.
      features: [batch, frames, conv_dim[-1]] conv features (or [batch, frames, logmel_bins * logmel_stack]
        log-mel frames) after the feature LayerNorm.
      feature_penalty: scalar, mean square of the conv features over valid frames.
      last_hidden_state: [batch, frames, dim], the encoder output (after the final LayerNorm in
        the pre-LN variant; equal to hidden_states[-1] otherwise).
      pooled: [batch, pooled_dim], the clip-level output of an encoder trained for one (BYOL-A,
        M2D, ATST-Clip); None for frame-level encoders.
    """

    hidden_states: tuple[jax.Array, ...]
    frame_mask: jax.Array
    features: jax.Array
    feature_penalty: jax.Array
    last_hidden_state: jax.Array
    pooled: jax.Array | None = None


@jax.custom_vjp
def _scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    return x


def _scale_fwd(x, scale):
    return x, scale


def _scale_bwd(scale, g):
    return (g * scale, None)


_scale_gradient.defvjp(_scale_fwd, _scale_bwd)


class SpeechEncoder(nn.Module):
    """The full encoder: raw audio in, every layer's hidden states out.

    Attributes:
      config: `EncoderConfig`.
    """

    config: EncoderConfig

    @nn.compact
    def __call__(
        self,
        wavs: jax.Array,
        audio_mask: jax.Array,
        *,
        mask_time_indices: jax.Array | None = None,
        deterministic: bool = True,
        keep: jax.Array | None = None,
    ) -> EncoderOutput:
        """Encodes a padded batch.

        Args:
          wavs: [batch, samples] float32 16 kHz audio.
          audio_mask: bool[batch, samples], True = real sample (a prefix of each row).
          mask_time_indices: optional bool[batch, frames]; True frames get the mask embedding.
          deterministic: disables dropout and LayerDrop when True (dropout uses the `dropout` RNG).
          keep: optional int32[batch, kept]: the Transformer runs on these frames only, and only
            those of them that `mask_time_indices` leaves unmasked are seen: the masked frames
            are removed, not replaced by the mask embedding (data2vec 2.0's student). The
            hidden states and `frame_mask` are then [batch, kept, ...]; `features` stay whole.
        Returns:
          `EncoderOutput`.
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        audio_mask = audio_mask.astype(bool)
        wavs = jnp.where(audio_mask, wavs, 0.0)
        if cfg.frontend == "logmel":
            raw, lengths = LogMelFrontend(cfg.logmel_bins, cfg.logmel_window, cfg.logmel_hop, cfg.logmel_stack,
                                          cfg.logmel_norm, name="frontend")(wavs, audio_mask.sum(axis=-1))
            raw = raw.astype(dtype)
            frame_mask = jnp.arange(raw.shape[1])[None, :] < lengths[:, None]
            penalty = jnp.zeros((), jnp.float32)  # nothing learnable to keep small
        elif cfg.frontend == "units":
            lengths = frame_lengths(cfg, audio_mask.sum(axis=-1))
            num = int(frame_lengths(cfg, np.asarray([wavs.shape[1]]))[0])
            raw, _ = UnitFrontend(cfg.units, cfg.unit_dim, cfg.downsampling, name="frontend")(
                wavs, audio_mask.sum(axis=-1), num)
            raw = raw.astype(dtype)
            frame_mask = jnp.arange(raw.shape[1])[None, :] < lengths[:, None]
            raw = jnp.where(frame_mask[..., None], raw, 0.0)
            penalty = jnp.zeros((), jnp.float32)
        else:
            raw, lengths = FeatureExtractor(
                cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride, cfg.conv_bias, cfg.feat_extract_norm, dtype,
                name="feature_extractor",
            )(wavs, audio_mask.sum(axis=-1))
            frame_mask = jnp.arange(raw.shape[1])[None, :] < lengths[:, None]
            if cfg.feature_grad_scale != 1.0:
                raw = _scale_gradient(raw, cfg.feature_grad_scale)
            m = frame_mask[..., None].astype(jnp.float32)
            penalty = jnp.sum(jnp.square(raw.astype(jnp.float32)) * m) / jnp.maximum(m.sum() * raw.shape[-1], 1.0)

        features = nn.LayerNorm(
            epsilon=LN_EPS,
            use_fast_variance=False,
            dtype=dtype,
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("conv_channels",)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_channels",)),
            name="feature_layer_norm",
        )(raw)
        x = nn.Dense(
            cfg.hidden_size,
            dtype=dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("conv_channels", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="feature_projection",
        )(features)
        x = nn.Dropout(cfg.feat_proj_dropout)(x, deterministic=deterministic)
        mask_emb = self.param(
            "mask_embedding", nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("embed",)), (cfg.hidden_size,)
        )
        if mask_time_indices is not None and mask_time_indices.shape != frame_mask.shape:
            raise ValueError(f"mask_time_indices has shape {mask_time_indices.shape}, expected {frame_mask.shape}")
        seen = frame_mask
        if keep is not None:
            if mask_time_indices is not None:
                seen = frame_mask & ~mask_time_indices
        elif mask_time_indices is not None:
            x = jnp.where(mask_time_indices[..., None], mask_emb.astype(x.dtype), x)
        hidden_states, last = TransformerEncoder(cfg, name="encoder")(x, seen, deterministic, keep)
        return EncoderOutput(
            hidden_states=hidden_states,
            frame_mask=seen if keep is None else jnp.take_along_axis(seen, keep, axis=1),
            features=features,
            feature_penalty=penalty,
            last_hidden_state=last,
        )


# Encoders other than `SpeechEncoder`: `model.architecture` -> the module that defines them. Such
# a module holds `Config` (a frozen dataclass with `from_config`, `to_dict`, `num_layers`,
# `hidden_size`, `downsampling` and `frame_lengths(samples)`) and `Encoder` (a Flax module
# called like `SpeechEncoder` and returning an `EncoderOutput`).
ARCHITECTURES: dict[str, str] = {
    "transformer": __name__,
    "audio_cnn": "ssl_jax.models.audio_cnn",  # BYOL-A's convolutional encoders
    "patches": "ssl_jax.models.patch_encoder",  # ViT over log-mel patches (M2D)
    "frames": "ssl_jax.models.frame_encoder",  # RNN / conv / NPC / Transformer over frames (APC, CPC, TERA, ...)
}


def _architecture_module(cfg: Any) -> Any:
    import importlib

    name = cfg.get("architecture", "transformer") if hasattr(cfg, "get") else getattr(cfg, "architecture", "transformer")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model.architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return None if name == "transformer" else importlib.import_module(ARCHITECTURES[name])


def config_from(cfg: Any) -> Any:
    """The encoder config a `model` section describes: `EncoderConfig` for the Transformer
    encoder, else the `Config` of the architecture `model.architecture` names."""
    if isinstance(cfg, EncoderConfig) or dataclasses.is_dataclass(cfg):
        return cfg
    module = _architecture_module(cfg)
    return EncoderConfig.from_config(cfg) if module is None else module.Config.from_config(cfg)


def encoder_module(config: Any, name: str | None = None) -> nn.Module:
    """The Flax encoder for an encoder config (`SpeechEncoder` or the architecture's `Encoder`)."""
    if isinstance(config, EncoderConfig):
        return SpeechEncoder(config, name=name)
    return _architecture_module(config).Encoder(config, name=name)
