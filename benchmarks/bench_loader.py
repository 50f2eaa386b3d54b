"""Loader throughput, augmentation cost, and shard encoding figures.

    python benchmarks/bench_loader.py [--shards DIR] [--split train] [--workers 0 2]
        [--batches 40] [--encodings]
    python benchmarks/bench_loader.py --augment [--recipe configs/w2v2_tiny.py] [--repeats 3]
    python benchmarks/bench_loader.py --rir

Prints the training iterator's audio-seconds per second of wall time (batches of real audio
delivered, after a warm-up) for each worker count, its padding fraction, and with
`--encodings` the disk size and decode speed of int16 (`pcm_s16le`) against FLAC records for
the same utterances. Without `--shards` it uses the embedded corpus
(`ssl_jax.data.synth.ensure_corpus`), or with `--synthetic` a folder of synthetic signals.

`--augment` measures the loader with the recipe's batch shape (batch size, crop, buckets,
normalisation) and no augmentation, each transform alone with probability 1, all of them
with probability 1, an example mix (`MIX`), and the recipe's own `data.augment` when it
turns anything on; every
setting with each worker count, `--repeats` times (the figures are ranges: the machine may be
shared). The target is `--headroom` (20) times what a step consumes: one batch per
`--step-seconds` (the tiny recipe's step on 2 cores, 0.27 s quiet), so 74 batches/s. Batches
are counted, not audio: a batch of the recipe holds 8 crops of at most 4 s, about 22 s of
speech on the embedded corpus, whose utterances are shorter than the crop on average.
For 0 workers it also gives audio-s per CPU-second of the process (less sensitive to other
load on the machine than the wall clock).

`--rir` times the simulated room impulse responses of `ssl_jax.data.augment` against
pyroomacoustics' image method (when it is installed; it is not a dependency) on the same
random rooms, with the RT60 (Schroeder decay, -5 to -25 dB) and C50 of both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from ssl_jax.data import augment, pipeline
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


def loader_rate(shards: str, split: str, workers: int, batches: int, warmup: int = 0,
                **kw) -> dict[str, float]:
    """Audio-seconds/s delivered by `train_iterator` over `batches` batches, after the first
    batch (timed as start-up) and `warmup` more (untimed: worker processes fill their buffers).
    """
    t0 = time.perf_counter()
    it = pipeline.train_iterator(shards, split, num_workers=workers, **kw)
    first = next(it)
    t1 = time.perf_counter()
    for _ in range(warmup):
        next(it)
    real = padded = 0
    t2, c2 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        b = next(it)
        real += int(b["lengths"].sum())
        padded += int(b["audio_mask"].size)
    t3, c3 = time.perf_counter(), time.process_time()
    del first, b
    if hasattr(it, "close"):
        it.close()
    return {"workers": workers, "startup_s": t1 - t0,
            "batches_per_s": batches / (t3 - t2),
            "audio_seconds_per_s": real / SAMPLE_RATE / (t3 - t2),
            "audio_seconds_per_cpu_s": real / SAMPLE_RATE / max(c3 - c2, 1e-9),
            "measured_padding_fraction": 1 - real / padded,
            "plan_padding_fraction": it.plan.padding_fraction}


TRANSFORMS = ("speed", "pitch", "reverb", "noise", "babble", "telephone")
# An example of a moderate mix (speed perturbation as Ko et al. 2015: 0.9/1.0/1.1 for every
# utterance; the others on a fraction of utterances), to show what such a setting costs.
MIX = {"speed": {"prob": 1.0}, "pitch": {"prob": 0.3}, "reverb": {"prob": 0.3},
       "noise": {"prob": 0.3}, "babble": {"prob": 0.2}, "telephone": {"prob": 0.1}}


def augment_settings(recipe_augment: dict | None) -> dict[str, dict | None]:
    """Name -> `data.augment` value: none, each transform alone at p=1, all at p=1, the example
    mix `MIX`, and the recipe's own when it turns anything on."""
    out: dict[str, dict | None] = {"none": None}
    for name in TRANSFORMS:
        out[name] = {name: {"prob": 1.0}}
    out["all"] = {name: {"prob": 1.0} for name in TRANSFORMS}
    out["mix"] = MIX
    if recipe_augment is not None and augment.settings_from_config(recipe_augment).active:
        out["recipe"] = recipe_augment
    return out


def _to_dict(node):
    return {k: _to_dict(v) for k, v in node.items()} if hasattr(node, "items") else node


def augment_table(shards: str, split: str, recipe: str, workers: list[int], repeats: int,
                  batches: int, step_seconds: float, headroom: float) -> dict:
    """Loader rates per augmentation setting and worker count, `repeats` times each."""
    from ssl_jax.training.config_check import load_config_file

    c = load_config_file(recipe)
    d = c.data
    kw = dict(batch_size=c.train.batch_size, max_samples=int(round(d.max_seconds * SAMPLE_RATE)),
              min_samples=int(round(d.min_seconds * SAMPLE_RATE)), num_buckets=d.num_buckets,
              normalize=d.normalize, seed=c.seed)
    target = headroom / step_seconds  # batches per second
    settings = augment_settings(_to_dict(d.augment) if "augment" in d else None)
    rows = []
    for name, aug in settings.items():
        for w in workers:
            runs = [loader_rate(shards, split, w, batches, warmup=2 * w, augment=aug, **kw)
                    for _ in range(repeats)]
            rates = [r["batches_per_s"] for r in runs]
            audio = [r["audio_seconds_per_s"] for r in runs]
            row = {"augment": name, "workers": w, "batches_per_s": rates, "audio_seconds_per_s": audio,
                   "startup_s": [r["startup_s"] for r in runs],
                   "meets_target": min(rates) >= target}
            if w == 0:
                row["audio_seconds_per_cpu_s"] = [r["audio_seconds_per_cpu_s"] for r in runs]
            rows.append(row)
            cpu = (f"; per CPU-s {min(row['audio_seconds_per_cpu_s']):.0f}-"
                   f"{max(row['audio_seconds_per_cpu_s']):.0f}" if w == 0 else "")
            print(f"{name:>9} workers={w}: {min(rates):.0f}-{max(rates):.0f} batches/s, "
                  f"{min(audio):.0f}-{max(audio):.0f} audio-s/s "
                  f"(x{min(rates) / target * headroom:.0f}-"
                  f"{max(rates) / target * headroom:.0f} of a step's need{cpu}), start-up "
                  f"{min(row['startup_s']):.1f}-{max(row['startup_s']):.1f} s", flush=True)
    return {"recipe": recipe, "settings": kw, "target_batches_per_s": target,
            "step_seconds": step_seconds, "headroom": headroom, "rows": rows}


def _rt60_c50(h: np.ndarray) -> tuple[float, float]:
    """RT60 from the Schroeder decay (-5 to -25 dB, T20) and C50 in dB; direct path at the peak."""
    h = np.asarray(h, np.float64)[int(np.argmax(np.abs(h))):]
    e = np.cumsum((h ** 2)[::-1])[::-1]
    edc = 10 * np.log10(e / e[0] + 1e-30)
    i5, i25 = int(np.argmax(edc < -5)), int(np.argmax(edc < -25))
    rt60 = -60.0 / np.polyfit(np.arange(i5, i25) / SAMPLE_RATE, edc[i5:i25], 1)[0]
    n50 = int(0.05 * SAMPLE_RATE)
    return float(rt60), float(10 * np.log10(np.sum(h[:n50] ** 2) / np.sum(h[n50:] ** 2)))


def rir_figures(rooms: int = 8, seed: int = 0) -> list[dict]:
    """Own impulse responses against pyroomacoustics' image method on the same random rooms."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        pra = None
        print("pyroomacoustics is not installed: timing the own generator only")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(rooms):
        dims = rng.uniform((3.0, 3.0, 2.4), (10.0, 8.0, 4.0))
        src, mic = (rng.uniform(0.5, dims - 0.5) for _ in range(2))
        rt60 = float(rng.uniform(0.2, 0.8))
        t0 = time.perf_counter()
        h = augment.shoebox_rir(np.random.default_rng(1), dims, src, mic, rt60)
        row = {"rt60": rt60, "distance_m": float(np.linalg.norm(src - mic)),
               "own_ms": 1e3 * (time.perf_counter() - t0)}
        row["own_rt60"], row["own_c50_db"] = _rt60_c50(h)
        if pra is not None:
            absorption, order = pra.inverse_sabine(rt60, dims)
            t0 = time.perf_counter()
            room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption),
                               max_order=order, air_absorption=False)
            room.add_source(src)
            room.add_microphone(mic)
            room.compute_rir()
            row["pra_ms"] = 1e3 * (time.perf_counter() - t0)
            row["pra_order"] = int(order)
            row["pra_rt60"], row["pra_c50_db"] = _rt60_c50(np.asarray(room.rir[0][0]))
        rows.append(row)
        other = (f"; pyroomacoustics (order {row['pra_order']}) {row['pra_ms']:.0f} ms, "
                 f"RT60 {row['pra_rt60']:.2f}, C50 {row['pra_c50_db']:.1f} dB" if pra else "")
        print(f"RT60 {rt60:.2f} s at {row['distance_m']:.1f} m: own {row['own_ms']:.2f} ms, "
              f"RT60 {row['own_rt60']:.2f}, C50 {row['own_c50_db']:.1f} dB{other}", flush=True)
    return rows


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
    p.add_argument("--augment", action="store_true",
                   help="loader rates per augmentation transform (see above)")
    p.add_argument("--recipe", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "..", "configs", "w2v2_tiny.py"),
                   help="with --augment: the recipe whose batch shape and seed are used")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--step-seconds", type=float, default=0.27,
                   help="with --augment: the recipe's training step time")
    p.add_argument("--headroom", type=float, default=20.0)
    p.add_argument("--rir", action="store_true",
                   help="impulse-response generator against pyroomacoustics")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.rir:
        rows = rir_figures()
        if args.json:
            print(json.dumps(rows, indent=1))
        return 0

    tmp = None
    if args.shards:
        shards = args.shards
    elif args.synthetic:
        tmp = tempfile.TemporaryDirectory()
        shards = synthetic_shards(tmp.name)
    else:
        from ssl_jax.data import synth

        shards = synth.ensure_corpus(hours=args.hours, seed=0)
    if args.augment:
        results = augment_table(shards, args.split, args.recipe, args.workers, args.repeats,
                                args.batches, args.step_seconds, args.headroom)
        if args.json:
            print(json.dumps(results, indent=1))
        if tmp is not None:
            tmp.cleanup()
        return 0
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
