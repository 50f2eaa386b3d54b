"""On-disk store of an upstream's hidden states for one split, written once, read per utterance.

Probing a BASE-width upstream on LibriSpeech-100 would need hundreds of GB to hold every
layer of every utterance in memory. Instead, features are extracted once into a folder:

    frames.bin   every utterance's hidden states, float16 [layers, frames, dim], concatenated
    index.npz    offsets (bytes) and frame counts per utterance, per-layer means [n, layers, dim]
    meta.json    layers, dim, frame rate, what was extracted (the store's key), completeness

Reads use `os.pread` into fresh buffers, so the operating system's page cache (not the
process' resident memory) holds what is reused. The per-layer means pool utterances for the
utterance-level probes; per-task normalisation statistics are streamed from the store.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FORMAT = "ssl_jax-features-v1"


class FeatureStore:
    """Read access to a complete store folder.

    Attributes:
        num_layers, dim: per-utterance arrays are [num_layers, frames, dim].
        lengths: int64 [utterances] frames per utterance.
        pooled: float32 [utterances, num_layers, dim] each utterance's frames pooled (the mean,
          or the upstream's own pooling, `meta["pooling"]`).
        frame_rate: frames per second.
    """

    def __init__(self, path: str):
        meta_path = os.path.join(path, "meta.json")
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"{path} is not a feature store (no meta.json)")
        with open(meta_path) as f:
            self.meta = json.load(f)
        if self.meta.get("format") != FORMAT or not self.meta.get("complete"):
            raise ValueError(f"{path}: incomplete or foreign feature store ({self.meta.get('format')})")
        self.path = path
        self.num_layers, self.dim = int(self.meta["layers"]), int(self.meta["dim"])
        self.frame_rate = float(self.meta["frame_rate"])
        index = np.load(os.path.join(path, "index.npz"))
        self.offsets, self.lengths = index["offsets"], index["lengths"]
        self.pooled = index["pooled"]
        self._file = os.path.join(path, "frames.bin")

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def frames(self, i: int, layer: int | None = None) -> np.ndarray:
        """Utterance i: float16 [layers, frames, dim], or [1, frames, dim] of one layer."""
        n = int(self.lengths[i])
        per_layer = n * self.dim * 2
        offset = int(self.offsets[i]) + (0 if layer is None else layer * per_layer)
        size = per_layer * (self.num_layers if layer is None else 1)
        with open(self._file, "rb") as f:
            buf = os.pread(f.fileno(), size, offset)
        if len(buf) != size:
            raise OSError(f"{self._file}: short read for utterance {i} (truncated store?)")
        return np.frombuffer(buf, np.float16).reshape(-1, n, self.dim)


def open_or_build(path: str, key: dict[str, Any], embed: Callable[[list[np.ndarray]], list[np.ndarray]],
                  audio: Callable[[int], np.ndarray], lengths: Sequence[int], frame_rate: float, *,
                  chunk: int = 64, log: Callable[[str], None] = print, pooling: str = "mean") -> FeatureStore:
    """The store at `path` if it holds exactly `key`; else extracts it there.

    Args:
        key: what is extracted (upstream identity, source folder, split, count); a store
            with another key at `path` is rebuilt.
        embed: list of 1-D waveforms -> list of [layers, frames, dim] (e.g. `Upstream.embed`).
        audio: utterance index -> 1-D float32 waveform.
        lengths: samples per utterance (extraction runs in length order, `chunk` at a time).
        pooling: how `pooled` pools each layer's frames (`upstream.pool_frames`).
    """
    from ssl_jax.upstream import pool_frames

    pool_frames(np.zeros((1, 1)), pooling)  # an unknown pooling fails before any extraction
    meta_path = os.path.join(path, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("key") == key and meta.get("complete") and meta.get("format") == FORMAT:
            return FeatureStore(path)
        log(f"  {path}: stale feature store (another upstream or source), extracting again")
    t0 = time.time()
    n = len(lengths)
    if n == 0:
        raise ValueError(f"nothing to extract into {path}: the split is empty")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        offsets = np.zeros(n, np.int64)
        frames = np.zeros(n, np.int64)
        pooled = None
        layers = dim = None
        order = np.argsort(np.asarray(lengths), kind="stable")
        pos = 0
        with open(os.path.join(tmp, "frames.bin"), "wb") as out:
            for start in range(0, n, chunk):
                idx = order[start:start + chunk]
                wavs = [audio(int(i)) for i in idx]
                for i, w in zip(idx, wavs):
                    if w.size == 0:
                        raise ValueError(f"utterance {int(i)} of {key.get('split')} is empty")
                for i, h in zip(idx, embed(wavs)):
                    h = np.asarray(h)
                    if layers is None:
                        layers, dim = int(h.shape[0]), int(h.shape[2])
                        pooled = np.zeros((n, layers, dim), np.float32)
                    if h.shape[1] == 0:
                        raise ValueError(f"utterance {int(i)} of {key.get('split')} gives no frames")
                    h16 = np.ascontiguousarray(h.astype(np.float16))
                    offsets[i], frames[i] = pos, h16.shape[1]
                    pooled[i] = pool_frames(h16, pooling)
                    out.write(h16.tobytes())
                    pos += h16.nbytes
        np.savez(os.path.join(tmp, "index.npz"), offsets=offsets, lengths=frames, pooled=pooled)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump({"format": FORMAT, "key": key, "pooling": pooling, "layers": layers, "dim": dim, "frame_rate": frame_rate,
                       "utterances": n, "frames": int(frames.sum()), "bytes": pos,
                       "seconds": round(time.time() - t0, 1), "complete": True}, f, indent=1)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"  extracted {n} utterances of {key.get('split')} in {time.time() - t0:.1f}s "
        f"({pos / 2**20:.0f} MiB on disk)")
    return FeatureStore(path)


def layer_stats(store: FeatureStore, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer, per-dimension mean and std over every frame of `rows`: two [layers, dim] arrays."""
    total = int(sum(int(store.lengths[r]) for r in rows))
    if total == 0:
        raise ValueError("no frames to compute normalisation statistics from")
    s = np.zeros((store.num_layers, store.dim), np.float64)
    sq = np.zeros_like(s)
    # Shifted sums (by the first utterance's mean) keep the variance accurate in float64.
    shift = store.pooled[rows[0]].astype(np.float64)
    for r in rows:
        f = store.frames(int(r)).astype(np.float64) - shift[:, None]
        s += f.sum(1)
        sq += np.square(f).sum(1)
    mean = s / total
    var = np.maximum(sq / total - np.square(mean), 0.0)
    return (mean + shift).astype(np.float32), np.maximum(np.sqrt(var), 1e-5).astype(np.float32)
