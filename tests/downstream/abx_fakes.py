"""Stand-ins for the ABX tests: items on a grid of labels x speakers x contexts, synthetic
per-utterance features that encode the label, the speaker or nothing, and a reference DTW."""

from __future__ import annotations

import itertools
import os

import numpy as np
import soundfile as sf

from ssl_jax.downstream.abx import Item

SR = 16_000


def grid_items(labels, speakers, contexts=("",), per_cell: int = 1, seed: int = 0,
               samples=(3200, 9600)) -> list[Item]:
    """One utterance per item, `per_cell` items per (label, speaker, context), random lengths."""
    rng = np.random.default_rng(seed)
    items = []
    for lab, spk, ctx, _ in itertools.product(labels, speakers, contexts, range(per_cell)):
        items.append(Item(len(items), 0, int(rng.integers(*samples)), lab, ctx, spk))
    return items


def label_features(items, frame_rate: float = 50.0, dim: int = 16, seed: int = 0) -> dict[int, np.ndarray]:
    """utt -> float16 [3, frames, dim]: layer 0 noise, layer 1 the label, layer 2 the speaker.

    Layer 1's frames are a per-label trajectory (two random directions, blended over the item)
    plus small noise; layer 2's are a per-speaker direction plus small noise.
    """
    rng = np.random.default_rng(seed)
    labels = sorted({it.label for it in items})
    speakers = sorted({it.speaker for it in items})
    start = {lab: rng.standard_normal(dim) for lab in labels}
    stop = {lab: rng.standard_normal(dim) for lab in labels}
    voice = {s: rng.standard_normal(dim) for s in speakers}
    out = {}
    for it in items:
        n = max(1, int(np.ceil(it.end * frame_rate / SR)))
        w = np.linspace(0.0, 1.0, n)[:, None]
        content = (1 - w) * start[it.label] + w * stop[it.label]
        out[it.utt] = np.stack([
            rng.standard_normal((n, dim)),
            content + 0.05 * rng.standard_normal((n, dim)),
            voice[it.speaker] + 0.05 * rng.standard_normal((n, dim)),
        ]).astype(np.float16)
    return out


def reference_dtw(x: np.ndarray, y: np.ndarray, distance: str = "angular") -> float:
    """DTW of two frame sequences [frames, dim] by plain loops (`reference_dtw_matrix`)."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    d = np.zeros((len(x), len(y)))
    for i in range(len(x)):
        for j in range(len(y)):
            c = min(1.0, max(-1.0, float(np.dot(x[i], y[j]))))
            d[i, j] = np.arccos(c) / np.pi if distance == "angular" else 1.0 - c
    return reference_dtw_matrix(d)


def reference_dtw_matrix(d: np.ndarray) -> float:
    """Accumulated cost by plain loops, then a back-trace from the end for the path length:
    the diagonal when it is <= both others, else (i, j-1) when <= (i-1, j), else (i-1, j)."""
    n, m = d.shape
    acc = np.full((n, m), np.inf)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                acc[i, j] = d[0, 0]
                continue
            prev = min(acc[i - 1, j] if i else np.inf, acc[i, j - 1] if j else np.inf,
                       acc[i - 1, j - 1] if i and j else np.inf)
            acc[i, j] = d[i, j] + prev
    i, j, length = n - 1, m - 1, 1
    while i > 0 or j > 0:
        up = acc[i - 1, j] if i else np.inf
        left = acc[i, j - 1] if j else np.inf
        diag = acc[i - 1, j - 1] if i and j else np.inf
        if i and j and diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif j and left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    return acc[n - 1, m - 1] / length


def write_tone(path: str, freq: float, seconds: float = 0.3, sr: int = SR, channels: int = 1) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.2 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        x = np.stack([x] * channels, 1)
    sf.write(path, x, sr)


def write_word_folder(root: str, words: int = 6, speakers: int = 3) -> None:
    """`root/spkS/wK.wav`: word K is two tones in a row, speaker S adds a fixed high partial."""
    t = np.arange(int(0.15 * SR)) / SR
    for s, k in itertools.product(range(speakers), range(words)):
        parts = [np.sin(2 * np.pi * (300 + 150 * ((k + step) % words)) * t)
                 + 0.5 * np.sin(2 * np.pi * (4200 + 400 * s) * t) for step in (0, 1)]
        path = os.path.join(root, f"spk{s}", f"w{k}.wav")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, 0.2 * np.concatenate(parts), SR)


def spectrum_features(audio: np.ndarray, seed: int) -> np.ndarray:
    """[2, frames, 32] at 50 Hz: a log spectrum (400-sample windows, 320 hop) and noise."""
    frames = max(1, (len(audio) - 400) // 320 + 1)
    idx = np.minimum(np.arange(400)[None] + 320 * np.arange(frames)[:, None], len(audio) - 1)
    spec = np.abs(np.fft.rfft(audio[idx] * np.hanning(400), n=512, axis=-1))[:, :256]
    logspec = np.log(spec.reshape(frames, 32, 8).mean(-1) + 1e-3)
    logspec -= logspec.mean(-1, keepdims=True)
    noise = np.random.default_rng(seed).standard_normal(logspec.shape)
    return np.stack([noise, logspec]).astype(np.float32)
