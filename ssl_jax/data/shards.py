"""On-disk waveform shards: ArrayRecord files of encoded audio plus JSON manifests.

A shard folder holds, per split:
    `{split}-{k:05d}.array_record`  one record per utterance, the encoded audio bytes;
    `{split}.jsonl`                 one JSON object per utterance, in record order
                                                                    (`id`, `num_samples`, and any labels);
and one `index.json` naming the shards of every split, the sample rate and the encoding.

Audio is mono 16 kHz; `pcm_s16le` records are raw little-endian int16 samples,
`flac` records are complete FLAC files.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

FORMAT = "ssl_jax-shards-v1"
SAMPLE_RATE = 16_000
ENCODINGS = ("pcm_s16le", "flac")


def encode_audio(audio: np.ndarray, encoding: str) -> bytes:
    """Encodes float audio in [-1, 1], `[samples]`, as record bytes."""
    pcm = np.clip(np.round(np.asarray(audio, np.float32) * 32768.0), -32768, 32767).astype("<i2")
    if encoding == "pcm_s16le":
        return pcm.tobytes()
    if encoding == "flac":
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    raise ValueError(f"unknown audio encoding {encoding!r}; expected one of {ENCODINGS}")


def decode_audio(data: bytes, encoding: str) -> np.ndarray:
    """Decodes record bytes to float32 audio, `[samples]`."""
    if encoding == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding == "flac":
        import soundfile as sf

        audio, _ = sf.read(io.BytesIO(data), dtype="float32")
        return audio
    raise ValueError(f"unknown audio encoding {encoding!r}; expected one of {ENCODINGS}")


class ShardWriter:
    """Writes one split of a shard folder; call `add` per utterance, then `close`.

    Several splits may be written into one folder, each with its own writer; every
    `close` merges its split into `index.json`.
    """

    def __init__(self, out_dir: str, split: str, *, encoding: str = "pcm_s16le",
                              utterances_per_shard: int = 2000):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown audio encoding {encoding!r}; expected one of {ENCODINGS}")
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.split, self.encoding = out_dir, split, encoding
        self.utterances_per_shard = utterances_per_shard
        self._shards: list[str] = []
        self._writer = None
        self._in_shard = 0
        self._count = 0
        self._samples = 0
        self._manifest = open(os.path.join(out_dir, f"{split}.jsonl"), "w")

    def _next_shard(self) -> None:
        from array_record.python import array_record_module as ar

        if self._writer is not None:
            self._writer.close()
        name = f"{self.split}-{len(self._shards):05d}.array_record"
        self._shards.append(name)
        self._writer = ar.ArrayRecordWriter(os.path.join(self.out_dir, name), "group_size:1")
        self._in_shard = 0

    def add(self, audio: np.ndarray, meta: dict[str, Any]) -> None:
        """Appends one utterance. audio: `[samples]` float in [-1, 1] at 16 kHz; meta needs `id`."""
        if "id" not in meta:
            raise ValueError("utterance metadata needs an 'id'")
        if self._writer is None or self._in_shard >= self.utterances_per_shard:
            self._next_shard()
        self._writer.write(encode_audio(audio, self.encoding))
        self._in_shard += 1
        self._count += 1
        self._samples += int(audio.shape[0])
        record = dict(meta, num_samples=int(audio.shape[0]))
        self._manifest.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> dict[str, Any]:
        """Finishes the split and records it in `index.json`; returns the split's entry."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._manifest.close()
        entry = {
                "shards": self._shards,
                "num_utterances": self._count,
                "num_samples": self._samples,
                "hours": self._samples / SAMPLE_RATE / 3600.0,
        }
        index_path = os.path.join(self.out_dir, "index.json")
        index = read_index(self.out_dir) if os.path.exists(index_path) else {
                "format": FORMAT, "sample_rate": SAMPLE_RATE, "encoding": self.encoding, "splits": {}}
        if index["encoding"] != self.encoding:
            raise ValueError(f"{self.out_dir} already holds {index['encoding']} shards; "
                                              f"cannot add {self.encoding} split {self.split!r}")
        index["splits"][self.split] = entry
        tmp = index_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(index, f, indent=1)
        os.replace(tmp, index_path)
        return entry

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_index(shard_dir: str) -> dict[str, Any]:
    """Reads and checks `index.json` of a shard folder."""
    path = os.path.join(shard_dir, "index.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
                f"{shard_dir} is not a shard folder (no index.json); build one with "
                "`python -m ssl_jax.data.prepare` or `python -m ssl_jax.data.synth`")
    with open(path) as f:
        index = json.load(f)
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def read_manifest(shard_dir: str, split: str) -> list[dict[str, Any]]:
    """Per-utterance metadata of one split, in record order."""
    index = read_index(shard_dir)
    if split not in index["splits"]:
        raise KeyError(f"{shard_dir} has no split {split!r}; splits: {sorted(index['splits'])}")
    with open(os.path.join(shard_dir, f"{split}.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


class ShardSource:
    """Random-access source over one split (a Grain `RandomAccessDataSource`).

    `source[i]` is `{"audio": float32 [samples], "index": i}`; metadata of record i is
    `source.manifest[i]`, and `source.num_samples` gives every length without reading audio.
    """

    def __init__(self, shard_dir: str, split: str):
        index = read_index(shard_dir)
        self.shard_dir, self.split = shard_dir, split
        self.manifest = read_manifest(shard_dir, split)
        self.encoding = index["encoding"]
        self.sample_rate = index["sample_rate"]
        self.num_samples = np.array([m["num_samples"] for m in self.manifest], np.int64)
        self._paths = [os.path.join(shard_dir, s) for s in index["splits"][split]["shards"]]
        self._source = None

    def _records(self):
        # Opened lazily so that the source pickles cheaply into Grain worker processes.
        if self._source is None:
            import grain.python as gp

            self._source = gp.ArrayRecordDataSource(self._paths)
        return self._source

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        return {"audio": decode_audio(self._records()[i], self.encoding), "index": np.int64(i)}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None
        return state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"ShardSource({self.shard_dir!r}, {self.split!r}, {len(self)} utterances)"

