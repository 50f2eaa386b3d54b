"""Small stand-ins for downstream tests: a tone corpus with the corpus' manifest fields and
a spectral "upstream" with two layers. The labels are audible in the tones, so probes can
learn them in a few steps."""

from __future__ import annotations

import dataclasses

import numpy as np

from ssl_jax.data.shards import ShardWriter

SR = 16_000
PHONES = ["a", "e", "i", "o", "u", "m"]
FREQS = {p: 300.0 + 250.0 * k for k, p in enumerate(PHONES)}
KEYWORDS = ["yes", "no", "_silence_", "_unknown_"]
STYLES = ["neutral", "loud"]
ACTIONS, OBJECTS, LOCATIONS = ["on", "off"], ["lights", "music"], ["kitchen", "none"]


def _tones(seq, speaker: int, rng, gain=0.3, dur=0.08) -> np.ndarray:
    n = int(dur * SR)
    t = np.arange(n) / SR
    parts = [np.zeros(800, np.float32)]
    for p in seq:
        f = FREQS[p]
        # The speaker is a fixed high partial; the phone is the fundamental.
        w = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * (4200 + 300 * speaker) * t)
        parts.append((gain * w * np.hanning(n)).astype(np.float32))
    parts.append(np.zeros(800, np.float32))
    audio = np.concatenate(parts)
    return (audio + 0.003 * rng.standard_normal(audio.shape)).astype(np.float32)


def write_fake_corpus(out_dir: str, per_split: int = 24, seed: int = 0) -> str:
    """Shard folder with splits train/valid/test (speakers 0-3) and test_unseen (4-5)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "valid", "test", "test_unseen"):
        speakers = [4, 5] if split == "test_unseen" else [0, 1, 2, 3]
        with ShardWriter(out_dir, split) as w:
            for k in range(per_split):
                spk = speakers[k % len(speakers)]
                kind = ("sentence", "keyword", "intent")[k % 3]
                style = STYLES[(k // 3) % 2]
                gain = 0.6 if style == "loud" else 0.2
                meta = {"id": f"{split}-{k}", "speaker": f"spk{spk}", "language": "en-us",
                        "task": kind, "style": style, "keyword": None, "intent": None}
                if kind == "keyword":
                    kw = KEYWORDS[(k // 3) % len(KEYWORDS)]
                    seq = {"yes": ["a", "i"], "no": ["o", "u"], "_silence_": [], "_unknown_": ["m", "e"]}[kw]
                    meta.update(keyword=kw, text=kw.strip("_"))
                elif kind == "intent":
                    a, o, loc = ACTIONS[k % 2], OBJECTS[(k // 2) % 2], LOCATIONS[(k // 4) % 2]
                    seq = [{"on": "a", "off": "o"}[a], {"lights": "i", "music": "u"}[o],
                           {"kitchen": "m", "none": "e"}[loc]]
                    meta.update(intent={"action": a, "object": o, "location": loc},
                                text=f"turn {a} the {o} {loc}")
                else:
                    seq = list(rng.choice(PHONES, size=int(rng.integers(3, 8))))
                    meta.update(text=" ".join("".join(seq[i:i + 2]) for i in range(0, len(seq), 2)))
                meta["phonemes"] = seq
                w.add(_tones(seq, spk, rng, gain=gain), meta)
    return out_dir


@dataclasses.dataclass
class _Out:
    hidden_states: tuple
    lengths: np.ndarray


class SpectrumUpstream:
    """Two "layers": a 32-bin log spectrum (20 ms hop) and a fixed random mix of it."""

    name = "spectrum"
    frame_rate = 50.0

    def __init__(self, seed: int = 0):
        self.proj = np.random.default_rng(seed).standard_normal((32, 16)).astype(np.float32) / 4
        self.calls = 0

    def __call__(self, wavs, lengths):
        self.calls += 1
        wavs = np.asarray(wavs)
        frames = (wavs.shape[1] - 400) // 320 + 1
        idx = np.arange(400)[None] + 320 * np.arange(frames)[:, None]
        spec = np.abs(np.fft.rfft(wavs[:, idx] * np.hanning(400), n=512, axis=-1))[..., :256]
        logspec = np.log(spec.reshape(*spec.shape[:2], 32, 8).mean(-1) + 1e-4).astype(np.float32)
        other = np.tanh(logspec @ self.proj)
        other = np.concatenate([other, other], -1)
        n = np.maximum((np.asarray(lengths) - 400) // 320 + 1, 1)
        return _Out(hidden_states=(logspec, other), lengths=n)

    def embed(self, waveforms, batch_size=8, dtype=np.float32):
        """1-D waveforms -> per input [layers, frames, dim], each encoded alone."""
        out = []
        for w in waveforms:
            res = self(np.asarray(w, np.float32)[None], np.array([len(w)]))
            out.append(np.stack([h[0, :int(res.lengths[0])] for h in res.hidden_states]).astype(dtype))
        return out
