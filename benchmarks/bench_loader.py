"""Loader throughput and shard encoding figures.

    python benchmarks/bench_loader.py [--shards DIR] [--split train] [--workers 0 2]
        [--batches 40] [--encodings]

Prints the training iterator's audio-seconds per second of wall time (batches of real audio
delivered, after the first batch) for each worker count, its padding fraction, and with
`--encodings` the disk size and decode speed of int16 (`pcm_s16le`) against FLAC records for
the same utterances. Without `--shards` it uses the embedded corpus
(`ssl_jax.data.synth.ensure_corpus`), or with `--synthetic` a folder of synthetic signals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from ssl_jax.data import pipeline
from ssl_jax.data.shards import SAMPLE_RATE, ENCODINGS, ShardSource, ShardWriter


def synthetic_shards(out: str, seconds: float = 600.0, seed: int = 0) -> str:
    """Writes harmonic, amplitude-modulated noisy signals of 1-15 s (a speech stand-in)."""
    rng = np.random.default_rng(seed)
    total = 0.0
    with ShardWriter(out, "train") as w:
        k = 0
        while total < seconds:
            n = int(rng.uniform(1.0, 15.0) * SAMPLE_RATE)
            t = np.arange(n) / SAMPLE_RATE
            f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
            phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
            voiced = sum(np.sin(h * phase) / h for h in range(1, 8))
            env = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 5) * t))
            x = 0.1 * env * voiced + 0.005 * rng.standard_normal(n)
            w.add(x.astype(np.float32), {"id": f"syn{k:05d}"})
            total += n / SAMPLE_RATE
            k += 1
    return out


def loader_rate(shards: str, split: str, workers: int, batches: int, **kw) -> dict[str, float]:
    """Audio-seconds/s delivered by `train_iterator` (first batch timed separately)."""
    t0 = time.perf_counter()
    it = pipeline.train_iterator(shards, split, num_workers=workers, **kw)
    first = next(it)
    t1 = time.perf_counter()
    real = padded = 0
    for _ in range(batches):
        b = next(it)
        real += int(b["lengths"].sum())
        padded += int(b["audio_mask"].size)
    t2 = time.perf_counter()
    del first, b
    if hasattr(it, "close"):
        it.close()
    return {"workers": workers, "startup_s": t1 - t0,
            "audio_seconds_per_s": real / SAMPLE_RATE / (t2 - t1),
            "measured_padding_fraction": 1 - real / padded,
            "plan_padding_fraction": it.plan.padding_fraction}


def _disk_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
               if f.endswith(".array_record"))


def encoding_figures(shards: str, split: str, max_utterances: int = 400) -> list[dict]:
    """Disk size and decode speed of each record encoding for the same utterances."""
    src = ShardSource(shards, split)
    audios = [src[i]["audio"] for i in range(min(len(src), max_utterances))]
    seconds = sum(len(a) for a in audios) / SAMPLE_RATE
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for enc in ENCODINGS:
            out = os.path.join(tmp, enc)
            t0 = time.perf_counter()
            with ShardWriter(out, "train", encoding=enc) as w:
                for k, a in enumerate(audios):
                    w.add(a, {"id": str(k)})
            t1 = time.perf_counter()
            s = ShardSource(out, "train")
            for rep in range(2):  # the second pass is timed, with the files in the page cache
                t2 = time.perf_counter()
                for i in range(len(s)):
                    s[i]
                t3 = time.perf_counter()
            size = _disk_bytes(out)
            rows.append({"encoding": enc, "audio_seconds": seconds, "bytes": size,
                         "bytes_per_audio_second": size / seconds,
                         "encode_audio_seconds_per_s": seconds / (t1 - t0),
                         "decode_audio_seconds_per_s": seconds / (t3 - t2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", default="", help="shard folder (default: the embedded corpus)")
    p.add_argument("--split", default="train")
    p.add_argument("--hours", type=float, default=1.0, help="embedded corpus size")
    p.add_argument("--synthetic", action="store_true", help="use synthetic signals instead")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=15.6)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--num-buckets", type=int, default=6)
    p.add_argument("--crop-to-bucket", type=float, default=0.0)
    p.add_argument("--encodings", action="store_true", help="also compare int16 and FLAC")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    tmp = None
    if args.shards:
        shards = args.shards
    elif args.synthetic:
        tmp = tempfile.TemporaryDirectory()
        shards = synthetic_shards(tmp.name)
    else:
        from ssl_jax.data import synth

        shards = synth.ensure_corpus(hours=args.hours, seed=0)
    kw = dict(batch_size=args.batch_size, max_samples=int(args.max_seconds * SAMPLE_RATE),
              min_samples=int(args.min_seconds * SAMPLE_RATE), num_buckets=args.num_buckets,
              normalize=True, seed=0, crop_to_bucket=args.crop_to_bucket)
    results: dict = {"shards": shards, "split": args.split, "cpu_count": os.cpu_count(),
                     "settings": kw, "loader": []}
    for w in args.workers:
        r = loader_rate(shards, args.split, w, args.batches, **kw)
        results["loader"].append(r)
        print(f"workers={w}: {r['audio_seconds_per_s']:.0f} audio-s/s "
              f"(start-up {r['startup_s']:.2f} s), "
              f"padding {100 * r['measured_padding_fraction']:.1f}% "
              f"(plan, one epoch: {100 * r['plan_padding_fraction']:.1f}%)", flush=True)
    if args.encodings:
        results["encodings"] = encoding_figures(shards, args.split)
        for r in results["encodings"]:
            print(f"{r['encoding']:>9}: {r['bytes_per_audio_second'] / 1000:.1f} kB per audio-s, "
                  f"decode {r['decode_audio_seconds_per_s']:.0f} audio-s/s, "
                  f"encode {r['encode_audio_seconds_per_s']:.0f} audio-s/s "
                  f"({r['audio_seconds']:.0f} s of audio)")
    if args.json:
        print(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
