"""`Upstream`: a frozen, jitted view of a trained or converted encoder for probing and notebooks.

  up = Upstream.load("runs/w2v2_tiny")   # a workdir, its checkpoints folder, a step folder or a converted checkpoint
  out = up(wavs, lengths)                # wavs [batch, samples] float32 16 kHz, lengths [batch] samples
  out.hidden_states                      # num_layers + 1 arrays [batch, frames, dim], transformers' order
  out.lengths                            # [batch] valid frames
  up.embed([w1, w2, ...])                # 1-D waveforms of any lengths -> per input [layers, frames, dim]

Every call runs on a padded shape taken from a short geometric ladder of lengths and a
power-of-two batch size (`LadderedUpstream`), so any mix of lengths compiles a bounded number
of XLA programs; outputs are sliced back, and an utterance's output never depends on the
padding around it (the encoder masks padded samples and frames; see
ssl_jax/models/feature_extractor.py and transformer.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta

from ssl_jax.data.shards import SAMPLE_RATE
from ssl_jax.models.encoder import EncoderConfig, config_from, encoder_module, frame_lengths



class UpstreamOutput(NamedTuple):
    """hidden_states: tuple of [batch, frames, dim]; lengths: int32[batch] valid frames."""

    hidden_states: tuple[np.ndarray, ...]
    lengths: np.ndarray


def normalize_waveforms(wavs: jax.Array, mask: jax.Array) -> jax.Array:
    """Zero mean, unit variance per utterance over valid samples (padding stays 0). [batch, samples]."""
    m = mask.astype(jnp.float32)
    n = jnp.maximum(m.sum(-1, keepdims=True), 1.0)
    mean = (wavs * m).sum(-1, keepdims=True) / n
    var = (jnp.square(wavs - mean) * m).sum(-1, keepdims=True) / n
    return jnp.where(mask, (wavs - mean) / jnp.sqrt(var + 1e-7), 0.0)


@dataclasses.dataclass(frozen=True)
class LengthLadder:
    """Padded lengths in samples: rung k is `min_samples * ratio**k` rounded up to `multiple`.

    The ladder has no top: a longer input climbs to a higher rung, so inputs of up to L samples
    use at most `1 + ceil(log(L / min_samples) / log(ratio))` rungs (at the defaults 5 rungs for
    anything up to 4 s, 15 for up to 2 min), and padding adds less than a factor `ratio`.

    Attributes:
      multiple: every rung is a multiple of this (the model's downsampling or hop length).
      min_samples: the lowest rung (1 s at 16 kHz).
      ratio: geometric step between rungs.
    """

    multiple: int
    min_samples: int = SAMPLE_RATE
    ratio: float = math.sqrt(2.0)

    def __post_init__(self):
        if self.multiple < 1 or self.min_samples < 1 or self.ratio <= 1.0:
            raise ValueError(f"invalid ladder: multiple={self.multiple}, min_samples={self.min_samples}, ratio={self.ratio}")

    def rung(self, k: int) -> int:
        """The k-th padded length (computed from k directly, so the ladder never drifts)."""
        # The tolerance keeps exact products (16000 * sqrt(2)**2) from rounding up a whole step.
        return int(math.ceil(self.min_samples * self.ratio**k / self.multiple - 1e-9)) * self.multiple

    def __call__(self, samples: int) -> int:
        """The smallest rung >= `samples`."""
        k = max(0, int(math.floor(math.log(max(samples, 1) / self.min_samples, self.ratio))) - 1)
        while self.rung(k) < samples:
            k += 1
        return self.rung(k)


def batch_bucket(n: int, max_batch: int) -> int:
    """Padded batch size for `n` rows: the next power of two, at most `max_batch`."""
    return min(1 << max(0, int(n) - 1).bit_length(), max_batch)


def check_waveforms(waveforms: Sequence[Any]) -> list[np.ndarray]:
    """Validates a list of 1-D, non-empty, finite float waveforms; returns them as float32 arrays."""
    if isinstance(waveforms, np.ndarray) or not isinstance(waveforms, Sequence):
        raise TypeError(f"expected a list of 1-D waveforms, got {type(waveforms).__name__}")
    out = []
    for i, w in enumerate(waveforms):
        a = np.asarray(w)
        if a.ndim != 1:
            raise ValueError(f"waveform {i}: expected a 1-D array [samples], got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"waveform {i}: expected float samples, got dtype {a.dtype}")
        if a.size == 0:
            raise ValueError(f"waveform {i} is empty")
        if not np.isfinite(a).all():
            raise ValueError(f"waveform {i} has non-finite samples")
        out.append(a.astype(np.float32, copy=False))
    return out


POOLINGS = ("mean", "mean+max")


def pool_frames(h: np.ndarray, pooling: str) -> np.ndarray:
    """[..., frames, dim] -> [..., dim]: the temporal mean, or mean plus max ("mean+max")."""
    h = np.asarray(h, np.float32)
    if pooling == "mean":
        return h.mean(-2)
    if pooling == "mean+max":
        return h.mean(-2) + h.max(-2)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class LadderedUpstream:
    """Calls and `embed` on padded shapes from a `LengthLadder`; shared by every upstream.

    A subclass provides `_forward(state, wavs, lengths) -> (hidden [layers, batch, frames, dim],
    frame_lengths [batch])` (traced under jit; `state` is passed as an argument so weights are not
    baked into the programs) and `frame_lengths(samples)`. Each distinct padded shape
    (batch, samples) is compiled once, ahead of time; `num_compiles` counts them.

    Attributes:
      name: a short label for tables.
      frame_rate: frames per second.
      num_hidden_states: entries of `hidden_states` (layers of `embed`'s output).
      dim: feature size.
      ladder: the `LengthLadder` of padded lengths.
      max_batch: calls with more rows run in chunks of this many.
      pooling: how the model pools its frames into one vector per utterance (`POOLINGS`):
        "mean", or "mean+max" for models trained on a clip embedding that is the temporal
        mean plus max (BYOL-A); utterance-level probes pool every layer this way.
    """

    name: str
    frame_rate: float
    num_hidden_states: int
    dim: int
    pooling: str = "mean"

    def __init__(self, state: Any, *, multiple: int, min_samples: int = SAMPLE_RATE, ratio: float = math.sqrt(2.0),
                 max_batch: int = 64):
        if max_batch < 1 or max_batch & (max_batch - 1):
            raise ValueError(f"max_batch must be a power of two, got {max_batch}")
        self._state = state
        self.ladder = LengthLadder(multiple, min_samples, ratio)
        self.max_batch = max_batch
        self._jitted = jax.jit(self._forward)
        self._programs: dict[tuple[int, int], Any] = {}

    def _forward(self, state: Any, wavs: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def frame_lengths(self, lengths) -> np.ndarray:
        """Valid frames for sample counts `lengths` (int array, any shape)."""
        raise NotImplementedError

    def set_state(self, state: Any) -> None:
        """Replaces the weights (same tree, shapes and dtypes); compiled programs are kept."""
        new = jax.tree.map(jnp.asarray, meta.unbox(state))
        if jax.tree.structure(new) != jax.tree.structure(self._state) or any(
            a.shape != b.shape or a.dtype != b.dtype for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(self._state))
        ):
            raise ValueError("set_state: the new weights differ in structure, shape or dtype from the current ones")
        self._state = new

    @property
    def num_compiles(self) -> int:
        """Distinct padded (batch, samples) shapes compiled so far."""
        return len(self._programs)

    def _run(self, wavs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """wavs [rows, width] already on the ladder -> (hidden [layers, rows, frames, dim], frames [rows])."""
        shape = wavs.shape
        if shape not in self._programs:
            self._programs[shape] = self._jitted.lower(
                self._state, jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape[:1], jnp.int32)
            ).compile()
        hidden, frames = self._programs[shape](self._state, wavs, lengths)
        return np.asarray(hidden), np.asarray(frames)

    def _padded(self, rows: list[np.ndarray], num_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Pads `rows` (1-D) to [num_rows, rung(longest)]; extra rows repeat the first (no empty row)."""
        lengths = np.array([len(r) for r in rows] + [len(rows[0])] * (num_rows - len(rows)), np.int32)
        wavs = np.zeros((num_rows, self.ladder(int(lengths.max()))), np.float32)
        for i in range(num_rows):
            r = rows[i] if i < len(rows) else rows[0]
            wavs[i, : len(r)] = r
        return wavs, lengths

    def __call__(self, wavs, lengths) -> UpstreamOutput:
        """Encodes a padded batch.

        Args:
          wavs: [batch, samples] float 16 kHz audio; samples at or beyond `lengths` are ignored.
          lengths: int[batch] valid samples per item (0 <= length <= samples).
        Returns:
          `UpstreamOutput`: `hidden_states`, `num_hidden_states` numpy arrays [batch, frames, dim]
          with frames = `frame_lengths(samples)` (what an unpadded call on [batch, samples] gives;
          frames past an item's length are padding), and `lengths` int32[batch] valid frames.
        """
        wavs = np.asarray(wavs, np.float32)
        lengths = np.asarray(lengths)
        if wavs.ndim != 2 or lengths.shape != (wavs.shape[0],) or wavs.shape[0] == 0:
            raise ValueError(f"expected wavs [batch, samples] and lengths [batch], got {wavs.shape} and {lengths.shape}")
        if not np.issubdtype(lengths.dtype, np.integer) or lengths.min() < 0 or lengths.max() > wavs.shape[1]:
            raise ValueError(f"lengths must be integers in [0, {wavs.shape[1]}], got {lengths.tolist()}")
        rows = [wavs[i, : int(n)] for i, n in enumerate(lengths)]
        if not all(np.isfinite(r).all() for r in rows):
            raise ValueError("wavs has non-finite samples within the valid lengths")
        frames = int(self.frame_lengths(np.array([wavs.shape[1]]))[0])
        hidden = np.zeros((self.num_hidden_states, len(rows), frames, self.dim), np.float32)
        for start in range(0, len(rows), self.max_batch):
            chunk = rows[start : start + self.max_batch]
            h, _ = self._run(*self._padded(chunk, batch_bucket(len(chunk), self.max_batch)))
            t = min(frames, h.shape[2])
            hidden[:, start : start + len(chunk), :t] = h[:, : len(chunk), :t]
        valid = self.frame_lengths(lengths.astype(np.int64)).astype(np.int32)
        return UpstreamOutput(tuple(hidden), valid)

    def embed(self, waveforms: Sequence[Any], *, batch_size: int = 8, layers: str | int | Sequence[int] = "all",
              dtype: Any = np.float32) -> list[np.ndarray]:
        """Encodes 1-D waveforms of any lengths, batched by length.

        Inputs are sorted by length and grouped by ladder rung; each batch has exactly
        `batch_size` rows (the last batch of a rung repeats an item), so one call compiles at
        most one program per rung used.

        Args:
          waveforms: list of 1-D float arrays [samples], 16 kHz, non-empty and finite.
          batch_size: rows per forward pass.
          layers: "all", a sequence of hidden-state indices (-> [len(layers), frames, dim]) or one
            index (-> [frames, dim]), as numpy indexing of the [layers, frames, dim] result.
          dtype: numpy dtype of the returned arrays.
        Returns:
          Per input, in input order: [layers, frames, dim] with frames = `frame_lengths(samples)`.
        """
        wavs = check_waveforms(waveforms)
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        batch_size = int(batch_size)
        if isinstance(layers, str):
            if layers != "all":
                raise ValueError(f"layers must be 'all', an index or a sequence of indices, got {layers!r}")
            select: Any = slice(None)
        else:
            select = layers if isinstance(layers, (int, np.integer)) else list(layers)
            np.empty(self.num_hidden_states)[select]  # raises IndexError on an out-of-range index
        lengths = np.array([len(w) for w in wavs])
        order = np.argsort(lengths, kind="stable")
        rung_of = np.array([self.ladder(int(n)) for n in lengths])
        out: list[np.ndarray | None] = [None] * len(wavs)
        for rung in np.unique(rung_of):
            idx = order[rung_of[order] == rung]
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                hidden, frames = self._run(*self._padded([wavs[i] for i in chunk], batch_size))
                for r, i in enumerate(chunk):
                    out[i] = np.ascontiguousarray(hidden[:, r, : int(frames[r])][select], dtype=dtype)
        return out  # type: ignore[return-value]


class Upstream(LadderedUpstream):
    """Deterministic encoder forward pass returning every layer's hidden states.

    Attributes:
      config: the `EncoderConfig`.
      num_layers: Transformer layers (hidden_states has num_layers + 1 entries).
      dim: hidden size.
      frame_rate: frames per second (50.0 for the standard extractor).
      normalize: whether waveforms are normalised per utterance before encoding.
    """

    def __init__(self, params: Mapping[str, Any], config: EncoderConfig | Mapping[str, Any], *, normalize: bool = False,
                 name: str = "upstream", **ladder: Any):
        """`ladder`: `min_samples`, `ratio`, `max_batch` of `LadderedUpstream` (rungs are multiples of the downsampling)."""
        self.config = config_from(config)
        self.normalize = bool(normalize)
        self.name = name
        self.num_layers = self.config.num_layers
        self.num_hidden_states = int(getattr(self.config, "num_hidden_states", self.num_layers + 1))
        self.dim = self.config.hidden_size
        self.frame_rate = SAMPLE_RATE / self.config.downsampling
        self._model = encoder_module(self.config)
        self.pooling = str(getattr(self.config, "pooling", "mean"))
        super().__init__(jax.tree.map(jnp.asarray, meta.unbox(params)), multiple=self.config.downsampling, **ladder)

    @property
    def params(self) -> Any:
        """The encoder parameters."""
        return self._state

    def _forward(self, params: Any, wavs: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        mask = jnp.arange(wavs.shape[1])[None, :] < lengths[:, None]
        if self.normalize:
            wavs = normalize_waveforms(wavs, mask)
        out = self._model.apply({"params": params}, wavs, mask, deterministic=True)
        return jnp.stack(out.hidden_states), out.frame_mask.sum(-1).astype(jnp.int32)

    def frame_lengths(self, lengths) -> np.ndarray:
        """Valid frames for sample counts `lengths`."""
        return np.asarray(frame_lengths(self.config, np.asarray(lengths)))

    @classmethod
    def load(cls, path: str, normalize: bool | None = None, **ladder: Any) -> "Upstream":
        """Loads a checkpoint written by training or `python -m ssl_jax.convert` (via `load_pretrained`).

        Args:
          path: a workdir, its checkpoints folder, a step folder or a converted checkpoint.
          normalize: None uses the checkpoint's flag (`data.normalize` of a training config,
            `convert.normalize` of a converted one, else False); True/False override it.
        """
        import os

        from ssl_jax.training.checkpoint import load_pretrained

        params, config = load_pretrained(path)
        if "model" not in config:
            raise ValueError(f"{path}: the checkpoint's config has no `model` section")
        if isinstance(params, Mapping) and "encoder" in params:
            params = params["encoder"]
        if normalize is None:
            normalize = checkpoint_normalize(config)
        name = os.path.basename(os.path.normpath(path)) or "upstream"
        return cls(params, config["model"], normalize=normalize, name=name, **ladder)


def checkpoint_normalize(config: Mapping[str, Any]) -> bool:
    """The waveform-normalisation flag a checkpoint's config records (False when it records none)."""
    data = config.get("data") or {}
    convert = config.get("convert") or {}
    return bool(data.get("normalize", convert.get("normalize", False)))
