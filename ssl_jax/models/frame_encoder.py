"""Frame encoders of the classic objectives (`model.architecture = "frames"`).

A front end turns audio into frames (log-mel with per-utterance CMVN, as APC, NPC, Mockingjay
and TERA read; or the strided conv extractor of CPC and wav2vec, models/feature_extractor.py);
a linear projection to `hidden_size` is hidden state 0; a body of `num_layers` layers follows:

  rnn          GRU/LSTM layers, uni- or bidirectional, residual from the second layer on (APC,
               Chung et al., 2019; CPC's context network, Rivière et al., 2020)
  conv         1-D conv layers with a residual, LayerNorm and ReLU, causal or centred (wav2vec's
               context network, Schneider et al., 2019; a VQ-VAE encoder)
  npc          NPC's conv blocks (3-frame conv + 1x1 conv, residual) each read by a masked
               convolution whose hidden centre grows with depth, so that the summed masked
               features never see the input frames within `npc_mask // 2` of their own frame
               (Liu et al., 2021); the sum is the last hidden state
  transformer  the Transformer of models/transformer.py (Mockingjay, TERA, DeCoAR 2.0)

Objectives that corrupt their input (masked reconstruction) call `features`, alter the frames,
then `body`; `__call__` is both, as `Upstream` and evaluation use it. An optional Gumbel
vector quantiser (`vq_layer`) replaces one hidden state of an rnn or conv body by its
codevectors (vq-wav2vec: the projected encoder output, `vq_layer = 0`; VQ-APC: a layer of the
context stack), and sows its perplexity as `intermediates/vq_perplexity`.

Deviations: NPC's and wav2vec's BatchNorm/GroupNorm become LayerNorm over each frame (no
batch statistics, so an utterance's output never depends on the rest of the batch); the
Transformer uses the conv positional embedding instead of Mockingjay's sinusoids.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.config_fields import from_section
from ssl_jax.models.encoder import EncoderConfig, EncoderOutput
from ssl_jax.models.feature_extractor import LN_EPS, FeatureExtractor, conv_output_lengths
from ssl_jax.models.frontends import LogMelFrontend, logmel_frame_lengths
from ssl_jax.models.quantizers import GumbelVectorQuantizer
from ssl_jax.models.rnn import CELLS, RecurrentLayer
from ssl_jax.models.transformer import TransformerEncoder

BODIES = ("rnn", "conv", "npc", "transformer")
VQ_COLLECTION = "intermediates"


@dataclasses.dataclass(frozen=True)
class Config:
    """Frame-encoder hyper-parameters (field names of a recipe's `model` section).

    Attributes:
      frontend: "logmel" or "conv".
      logmel_bins, logmel_window, logmel_hop, logmel_stack, logmel_norm: the log-mel front end
        (models/frontends.py); "utterance" = per-utterance CMVN of every band.
      conv_dim, conv_kernel, conv_stride, feat_extract_norm: the conv front end.
      body: one of `BODIES`.
      hidden_size: width of every hidden state.
      num_layers: body layers (NPC: conv blocks).
      cell, bidirectional: rnn body.
      conv_context_kernel, causal: conv body.
      npc_kernel, npc_mask: NPC's masked-conv width and input mask (both odd).
      num_heads, intermediate_size, num_conv_pos_embeddings, num_conv_pos_embedding_groups,
        layer_norm_first: transformer body.
      dropout: dropout after every body layer (and inside the Transformer).
      vq_layer: hidden state replaced by its Gumbel-VQ codevectors (-1: none).
      vq_groups, vq_codes: codebooks and entries per codebook.
      dtype: compute dtype.
    """

    frontend: str = "logmel"
    logmel_bins: int = 80
    logmel_window: int = 400
    logmel_hop: int = 160
    logmel_stack: int = 1
    logmel_norm: str = "utterance"
    conv_dim: tuple[int, ...] = (512,) * 5
    conv_kernel: tuple[int, ...] = (10, 8, 4, 4, 4)
    conv_stride: tuple[int, ...] = (5, 4, 2, 2, 2)
    feat_extract_norm: str = "layer"
    body: str = "rnn"
    hidden_size: int = 512
    num_layers: int = 3
    cell: str = "gru"
    bidirectional: bool = False
    conv_context_kernel: int = 3
    causal: bool = True
    npc_kernel: int = 15
    npc_mask: int = 5
    num_heads: int = 12
    intermediate_size: int = 3072
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_first: bool = False
    dropout: float = 0.0
    vq_layer: int = -1
    vq_groups: int = 2
    vq_codes: int = 320
    dtype: str = "float32"
    architecture: str = "frames"

    def __post_init__(self):
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.architecture != "frames":
            raise ValueError(f"frame_encoder.Config is the 'frames' architecture, got {self.architecture!r}")
        if self.frontend not in ("logmel", "conv"):
            raise ValueError(f"model.frontend must be 'logmel' or 'conv', got {self.frontend!r}")
        if self.body not in BODIES:
            raise ValueError(f"model.body must be one of {BODIES}, got {self.body!r}")
        if self.cell not in CELLS:
            raise ValueError(f"model.cell must be one of {CELLS}, got {self.cell!r}")
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError("conv_dim, conv_kernel and conv_stride must have the same length")
        if min(self.hidden_size, self.num_layers, self.logmel_stack, self.conv_context_kernel) < 1:
            raise ValueError("hidden_size, num_layers, logmel_stack and conv_context_kernel must be positive")
        if self.body == "npc" and (self.npc_kernel % 2 == 0 or self.npc_mask % 2 == 0
                                   or self.npc_mask + 2 * self.num_layers >= self.npc_kernel):
            raise ValueError(f"NPC needs odd npc_kernel and npc_mask with npc_mask + 2 * num_layers < npc_kernel "
                             f"(the last block's hidden centre must leave taps), got {self.npc_kernel}, "
                             f"{self.npc_mask}, {self.num_layers} layers")
        if self.body == "transformer" and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.vq_layer >= 0:
            if self.body not in ("rnn", "conv"):
                raise ValueError(f"vq_layer needs an rnn or conv body, got {self.body!r}")
            if self.vq_layer > self.num_layers:
                raise ValueError(f"vq_layer {self.vq_layer} is beyond the {self.num_layers} layers")
            if self.hidden_size % self.vq_groups or self.vq_codes < 2:
                raise ValueError(f"vq needs hidden_size divisible by vq_groups and vq_codes >= 2, got "
                                 f"{self.hidden_size}, {self.vq_groups}, {self.vq_codes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout}")
        jnp.dtype(self.dtype)

    @classmethod
    def from_config(cls, cfg: Any) -> "Config":
        """Builds from a ConfigDict or mapping; unknown keys are an error naming the valid ones."""
        return from_section(cls, cfg, "model (architecture 'frames')")

    def to_dict(self) -> dict:
        """A JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def num_hidden_states(self) -> int:
        """Entries of `hidden_states`: the projection, each body layer, and NPC's summed masked features."""
        return self.num_layers + 1 + (self.body == "npc")

    @property
    def feature_dim(self) -> int:
        """Width of a front-end frame."""
        return self.logmel_bins * self.logmel_stack if self.frontend == "logmel" else self.conv_dim[-1]

    @property
    def downsampling(self) -> int:
        """Samples per frame."""
        if self.frontend == "logmel":
            return self.logmel_hop * self.logmel_stack
        return int(np.prod(self.conv_stride))

    def frame_lengths(self, sample_lengths):
        """Valid frames for `sample_lengths` (numpy or jax ints, any shape)."""
        if self.frontend == "logmel":
            return logmel_frame_lengths(sample_lengths, self.logmel_window, self.logmel_hop, self.logmel_stack)
        return conv_output_lengths(sample_lengths, self.conv_kernel, self.conv_stride)

    def transformer_config(self) -> EncoderConfig:
        """The `EncoderConfig` of the transformer body."""
        return EncoderConfig(
            hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
            intermediate_size=self.intermediate_size, layer_norm_first=self.layer_norm_first,
            num_conv_pos_embeddings=self.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=self.num_conv_pos_embedding_groups,
            hidden_dropout=self.dropout, attention_dropout=self.dropout, activation_dropout=0.0,
            feat_proj_dropout=0.0, layerdrop=0.0, dtype=self.dtype, frontend="logmel")


def model_config(**overrides: Any):
    """A recipe's `model` section: every `Config` field at its default, with `overrides`
    (validated by building the `Config`)."""
    from ml_collections import config_dict

    return config_dict.ConfigDict(Config(**overrides).to_dict())


def _layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


def _conv(features: int, kernel: int, dtype: Any, name: str, padding: Any = "SAME") -> nn.Conv:
    return nn.Conv(features, kernel_size=(kernel,), padding=padding, dtype=dtype,
                   kernel_init=nn.with_logical_partitioning(nn.initializers.he_normal(), ("conv_kernel", "embed", "mlp")),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), name=name)


class ConvLayer(nn.Module):
    """x + ReLU(LayerNorm(conv(x))), causal (left padding) or centred; 0 on padding.

    Attributes: features; kernel; causal; dtype.
    """

    features: int
    kernel: int
    causal: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: [batch, frames, features], mask: bool[batch, frames] -> [batch, frames, features]."""
        pad = ((self.kernel - 1, 0),) if self.causal else "SAME"
        h = _conv(self.features, self.kernel, self.dtype, "conv", pad)(x)
        h = nn.relu(_layer_norm(self.dtype, "norm")(h))
        return jnp.where(mask[..., None], x + h, 0.0)


class NpcBlock(nn.Module):
    """NPC's conv block and its masked convolution.

    The block is ReLU(x + W(ReLU(LN(conv3(x))))) (one frame of context each side, so block l sees
    l frames each side of the input); the masked convolution (width `kernel`) reads the block's
    output with its centre `mask` taps zeroed, then tanh.

    Attributes: features; kernel; mask (odd, hidden centre); dtype.
    """

    features: int
    kernel: int
    mask: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [batch, frames, features] -> (block output, masked feature), both [batch, frames, features], 0 on padding."""
        m = mask[..., None]
        h = nn.relu(_layer_norm(self.dtype, "norm")(_conv(self.features, 3, self.dtype, "conv")(x)))
        h = nn.Dense(self.features, dtype=self.dtype,
                     kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name="linear")(h)
        h = jnp.where(m, nn.relu(x + h), 0.0)
        w = self.param("masked_kernel", nn.with_logical_partitioning(nn.initializers.he_normal(), ("conv_kernel", "embed", "mlp")),
                       (self.kernel, self.features, self.features))
        b = self.param("masked_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (self.features,))
        head = (self.kernel - self.mask) // 2
        taps = np.ones((self.kernel, 1, 1), np.float32)
        taps[head : head + self.mask] = 0.0
        z = jax.lax.conv_general_dilated(h.astype(self.dtype), (w * taps).astype(self.dtype), (1,), "SAME",
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        return h, jnp.where(m, jnp.tanh(z + b.astype(self.dtype)), 0.0)


class Encoder(nn.Module):
    """Front end -> projection -> body; see the module docstring.

    Attributes:
      config: `Config`.
    """

    config: Config

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        if cfg.frontend == "conv":
            self.extractor = FeatureExtractor(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride, False,
                                              cfg.feat_extract_norm, dtype)
        self.projection = nn.Dense(
            cfg.hidden_size, dtype=dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("conv_channels", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))
        if cfg.body == "rnn":
            self.layers = [RecurrentLayer(cfg.cell, cfg.hidden_size, cfg.bidirectional, dtype)
                           for _ in range(cfg.num_layers)]
        elif cfg.body == "conv":
            self.layers = [ConvLayer(cfg.hidden_size, cfg.conv_context_kernel, cfg.causal, dtype)
                           for _ in range(cfg.num_layers)]
        elif cfg.body == "npc":
            self.layers = [NpcBlock(cfg.hidden_size, cfg.npc_kernel, cfg.npc_mask + 2 * (i + 1), dtype)
                           for i in range(cfg.num_layers)]
        else:
            self.transformer = TransformerEncoder(cfg.transformer_config())
        if cfg.vq_layer >= 0:
            self.quantizer = GumbelVectorQuantizer(cfg.vq_groups, cfg.vq_codes, cfg.hidden_size, dtype)
        self.drop = nn.Dropout(cfg.dropout)

    def features(self, wavs: jax.Array, audio_mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Front-end frames.

        Args:
          wavs: [batch, samples] float32 16 kHz audio; audio_mask: bool[batch, samples] (a prefix).
        Returns:
          (frames [batch, frames, feature_dim] (0 on padding), frame_mask bool[batch, frames],
          feature_penalty: mean square of conv features over valid frames; 0 for log-mel).
        """
        cfg = self.config
        audio_mask = audio_mask.astype(bool)
        wavs = jnp.where(audio_mask, wavs, 0.0)
        if cfg.frontend == "logmel":
            x, lengths = LogMelFrontend(cfg.logmel_bins, cfg.logmel_window, cfg.logmel_hop, cfg.logmel_stack,
                                        cfg.logmel_norm, parent=None).apply({}, wavs, audio_mask.sum(-1))
            frame_mask = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
            return x, frame_mask, jnp.zeros((), jnp.float32)
        x, lengths = self.extractor(wavs, audio_mask.sum(-1))
        frame_mask = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        m = frame_mask[..., None].astype(jnp.float32)
        x = jnp.where(frame_mask[..., None], x, 0.0)
        penalty = jnp.sum(jnp.square(x.astype(jnp.float32)) * m) / jnp.maximum(m.sum() * x.shape[-1], 1.0)
        return x, frame_mask, penalty

    def body(self, x: jax.Array, frame_mask: jax.Array, *, deterministic: bool = True,
             vq_temperature: float | jax.Array = 1.0, feature_penalty: jax.Array | None = None) -> EncoderOutput:
        """Projection and body over front-end frames.

        Args:
          x: [batch, frames, feature_dim] (possibly altered by the objective); frame_mask: bool[batch, frames].
          deterministic: no dropout, hard VQ codes.
          vq_temperature: Gumbel-softmax temperature of the quantiser (training only).
        Returns:
          `EncoderOutput` with num_hidden_states hidden states [batch, frames, hidden_size]
          (0 on padding) and `features` = x.
        """
        cfg = self.config
        m = frame_mask[..., None]
        h = jnp.where(m, self.projection(x.astype(jnp.dtype(cfg.dtype))), 0.0)
        if cfg.body == "transformer":
            hidden, last = self.transformer(h, frame_mask, deterministic)
            hidden = tuple(jnp.where(m, s, 0.0) for s in hidden)
            last = jnp.where(m, last, 0.0)
        else:
            h = self._quantize(h, frame_mask, 0, deterministic, vq_temperature)
            hidden = [h]
            masked_sum = jnp.zeros_like(h)
            for i, layer in enumerate(self.layers):
                if cfg.body == "npc":
                    h, z = layer(h, frame_mask)
                    masked_sum = masked_sum + z
                else:
                    out = layer(h, frame_mask)
                    h = out + h if cfg.body == "rnn" and i > 0 else out
                h = jnp.where(m, self.drop(h, deterministic=deterministic), 0.0)
                h = self._quantize(h, frame_mask, i + 1, deterministic, vq_temperature)
                hidden.append(h)
            if cfg.body == "npc":
                hidden.append(masked_sum)
            hidden = tuple(hidden)
            last = hidden[-1]
        return EncoderOutput(hidden_states=hidden, frame_mask=frame_mask, features=x,
                             feature_penalty=jnp.zeros((), jnp.float32) if feature_penalty is None else feature_penalty,
                             last_hidden_state=last)

    def _quantize(self, h: jax.Array, frame_mask: jax.Array, index: int, deterministic: bool,
                  temperature: float | jax.Array) -> jax.Array:
        if self.config.vq_layer != index:
            return h
        q, perplexity = self.quantizer(h, frame_mask, temperature=temperature, deterministic=deterministic)
        self.sow(VQ_COLLECTION, "vq_perplexity", perplexity)
        return jnp.where(frame_mask[..., None], q, 0.0)

    def __call__(self, wavs: jax.Array, audio_mask: jax.Array, *, deterministic: bool = True,
                 mask_time_indices: jax.Array | None = None) -> EncoderOutput:
        """Encodes a padded batch (`SpeechEncoder`'s signature; masking belongs to the objectives)."""
        if mask_time_indices is not None:
            raise ValueError("the frame encoder takes no mask_time_indices: its objectives alter `features` themselves")
        x, frame_mask, penalty = self.features(wavs, audio_mask)
        return self.body(x, frame_mask, deterministic=deterministic, feature_penalty=penalty)
