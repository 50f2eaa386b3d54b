"""`python -m ssl_jax.cluster`: k-means targets for masked prediction (HuBERT iterations).

  python -m ssl_jax.cluster --config=configs/hubert_tiny.py --workdir=runs/kmeans_it1
  python -m ssl_jax.cluster --config=configs/hubert_tiny.py:iter2 --workdir=runs/kmeans_it2 \
      --config.objective.targets.checkpoint=runs/hubert_tiny_it1

Reads the recipe's training shards through the same Grain pipeline as training (same crops),
computes the recipe's target features in the graph (`objectives.targets`: MFCC + deltas, or a
frozen checkpoint's layer), standardises them, and fits mini-batch k-means (`ssl_jax.kmeans`)
with the points sharded over the mesh's batch axes. Writes `kmeans.npz` (the codebooks a
recipe names in `objective.targets.codebook`) and `cluster.json` (fit figures and the phone
purity, cluster purity and PNMI of the targets on the validation split against the corpus'
phone alignments), `cooccurrence.npz` (the phone-by-cluster frame counts behind those
figures), and the frame targets of the validation split (`--target_splits` for
others) as fairseq-style label files `<split>.km`, one line of cluster ids per utterance.
Training never reads label files: targets are assigned inside the step.

`ensure_codebooks`, called when a run starts, loads the recipe's codebooks or fits them once
and caches them beside the corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from ssl_jax import kmeans
from ssl_jax.data.shards import SAMPLE_RATE

log = logging.getLogger(__name__)

SILENCE = "<sil>"


# ----------------------------------------------------------------------------- features


def _encoder_config(config: Any):
    from ssl_jax.models.encoder import EncoderConfig

    return EncoderConfig.from_config(config["model"])


def load_teacher(config: Any) -> tuple[Any, Any]:
    """(EncoderConfig, host params) of `objective.targets.checkpoint`'s encoder, checked to
    give the recipe's frames and to have `objective.targets.layer`."""
    from ssl_jax.models.encoder import EncoderConfig, frame_lengths
    from ssl_jax.training.checkpoint import load_pretrained

    t = config["objective"]["targets"]
    if not t["checkpoint"]:
        raise ValueError("objective.targets.source='layer' needs objective.targets.checkpoint (the previous iteration's run)")
    params, saved = load_pretrained(t["checkpoint"])
    cfg = EncoderConfig.from_config(saved["model"])
    layer = int(t["layer"])
    if not 0 <= layer <= cfg.num_layers:
        raise ValueError(f"objective.targets.layer={layer}, but {t['checkpoint']} has layers 0..{cfg.num_layers}")
    probe = np.asarray([4000, 16000, 64123])
    student = _encoder_config(config)
    if not np.array_equal(frame_lengths(cfg, probe), frame_lengths(student, probe)):
        raise ValueError(
            f"{t['checkpoint']} has another frame rate or front end ({cfg.frontend}, {cfg.downsampling} samples per frame) "
            f"than this recipe ({student.frontend}, {student.downsampling}); its layer cannot give per-frame targets"
        )
    if "encoder" not in params:
        raise ValueError(f"{t['checkpoint']} holds no encoder parameters")
    return cfg, params["encoder"]


def feature_fn(config: Any, teacher: tuple[Any, Any] | None = None) -> Callable:
    """`fn(wavs, audio_mask) -> (features f32[batch, frames, dim], frame_mask bool[batch, frames])`,
    jitted, unstandardised, for `objective.targets`."""
    from ssl_jax.objectives import targets

    features = targets.from_config(config, teacher[0] if teacher is not None else None)
    if teacher is None:
        return jax.jit(lambda w, m: features(w, m))
    params = jax.tree.map(jnp.asarray, teacher[1])
    jitted = jax.jit(features.__call__)
    return lambda w, m: jitted(w, m, params)


def _train_batches(config: Any, data_path: str, seed_offset: int) -> Iterator[dict]:
    from ssl_jax.data import pipeline

    d = config["data"]
    return pipeline.train_iterator(
        data_path,
        d["train_split"],
        batch_size=int(config["train"]["batch_size"]),
        max_samples=int(round(d["max_seconds"] * SAMPLE_RATE)),
        min_samples=int(round(d["min_seconds"] * SAMPLE_RATE)),
        num_buckets=int(d["num_buckets"]),
        normalize=bool(d["normalize"]),
        seed=int(config["seed"]) + seed_offset,
        num_workers=0,
    )


def _points(config: Any, data_path: str, fn: Callable, seed_offset: int = 7919) -> Iterator[np.ndarray]:
    """Valid feature frames [n, dim] of successive training batches (host arrays)."""
    for batch in _train_batches(config, data_path, seed_offset):
        f, m = fn(jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_mask"]))
        f, m = np.asarray(f), np.asarray(m)
        yield f[m]


def _chunks(points: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of point arrays into arrays of exactly `size` rows."""
    buf, have = [], 0
    for p in points:
        buf.append(p)
        have += len(p)
        while have >= size:
            allp = np.concatenate(buf)
            yield allp[:size]
            buf, have = [allp[size:]], have - size


# ----------------------------------------------------------------------------- fit


def _kmeans_settings(config: Any) -> dict:
    k = config["objective"]["targets"]["kmeans"]
    return {name: k[name] for name in ("steps", "points_per_step", "seed_points", "seed", "reassignment_ratio")}


def fit_codebooks(config: Any, data_path: str, mesh: jax.sharding.Mesh | None = None) -> kmeans.Codebooks:
    """Fits one k-means per `objective.targets.num_clusters` on the recipe's target features."""
    t = config["objective"]["targets"]
    s = _kmeans_settings(config)
    teacher = load_teacher(config) if t["source"] == "layer" else None
    fn = feature_fn(config, teacher)
    t0 = time.time()
    devices = mesh.devices.size if mesh is not None else 1
    per_step = max(devices, int(s["points_per_step"]) // devices * devices)
    seed_pts = next(_chunks(_points(config, data_path, fn), int(s["seed_points"])))
    mean = seed_pts.mean(0)
    std = np.maximum(seed_pts.std(0), 1e-5)
    z_seed = ((seed_pts - mean) / std).astype(np.float32)
    sharding = replicated = None
    if mesh is not None:
        from ssl_jax.parallel import sharding as sharding_lib

        sharding = sharding_lib.batch_sharding(mesh, 1)
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharding.spec[0], None))
        replicated = sharding_lib.replicated(mesh)
    weights = np.ones((per_step,), np.float32)

    def batches():
        """Standardised mini-batches of a fresh pass over the training stream, after the frames
        the seeding sample took (streamed: nothing is held in memory but the current batch)."""
        points = _points(config, data_path, fn)
        next(_chunks(points, int(s["seed_points"])))
        for c in _chunks(points, per_step):
            yield ((c - mean) / std).astype(np.float32), weights

    if len(set(int(k) for k in t["num_clusters"])) != len(t["num_clusters"]):
        raise ValueError(f"objective.targets.num_clusters has repeated sizes: {t['num_clusters']}")
    centers, counts, histories = [], [], []
    for j, k in enumerate(int(k) for k in t["num_clusters"]):  # one pass per target set
        res = kmeans.fit(
            batches(),
            k,
            seed=int(s["seed"]) + j,
            init_points=z_seed,
            max_steps=int(s["steps"]),
            reassignment_ratio=float(s["reassignment_ratio"]),
            sharding=sharding,
            replicated=replicated,
        )
        centers.append(res.centers)
        counts.append(res.counts)
        histories.append(res.history)
    inertia = []
    for c in centers:
        _, d = kmeans.assign(jnp.asarray(z_seed), jnp.asarray(c))
        inertia.append(float(jnp.mean(d)))
    meta = {
        "source": t["source"],
        "layer": int(t["layer"]) if t["source"] == "layer" else None,
        "checkpoint": os.path.abspath(t["checkpoint"]) if t["source"] == "layer" else None,
        "num_clusters": [int(k) for k in t["num_clusters"]],
        "normalize": t.get("normalize", "none"),
        "kmeans": {k: (float(v) if isinstance(v, float) else int(v)) for k, v in s.items()},
        "data": os.path.abspath(data_path),
        "points_fitted": len(histories[0]) * per_step,
        "seed_inertia_per_point": inertia,
        "final_batch_inertia": [h[-1] if h else None for h in histories],
        "fit_seconds": time.time() - t0,
    }
    log.info("k-means %s on %s: %d points in %.1fs, inertia per point %s", meta["num_clusters"], t["source"],
             meta["points_fitted"], meta["fit_seconds"], ", ".join(f"{x:.3f}" for x in inertia))
    return kmeans.Codebooks(mean=mean.astype(np.float32), std=std.astype(np.float32), centers=centers, meta=meta)


# ----------------------------------------------------------------------------- quality


def frame_phones(entry: dict, num_frames: int, stride: int) -> list[str]:
    """The phone at the centre of each encoder frame (samples stride * t + 200) of a manifest
    entry's alignment; `SILENCE` between phones."""
    out = [SILENCE] * num_frames
    phones = (entry.get("alignment") or {}).get("phones") or []
    centres = np.arange(num_frames) * stride + 200
    for phone, start, end in phones:
        lo, hi = np.searchsorted(centres, [start, end])
        for t in range(lo, hi):
            out[t] = phone
    return out


def split_targets(config: Any, codebooks: kmeans.Codebooks, data_path: str, split: str,
                  fn: Callable | None = None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(record index, cluster ids int[frames] of each target set) for every utterance of
    `split`, in batches of the recipe's shape (utterances beyond `data.max_seconds` are cut
    there, as in evaluation)."""
    from ssl_jax.data import pipeline

    if fn is None:
        t = config["objective"]["targets"]
        fn = feature_fn(config, load_teacher(config) if t["source"] == "layer" else None)
    d = config["data"]
    it = pipeline.eval_iterator(
        data_path, split, batch_size=int(config["train"]["batch_size"]),
        max_samples=int(round(d["max_seconds"] * SAMPLE_RATE)), num_buckets=int(d["num_buckets"]),
        normalize=bool(d["normalize"]),
    )
    for batch in it:
        f, m = fn(jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_mask"]))
        z = (np.asarray(f) - codebooks.mean) / codebooks.std
        m = np.asarray(m)
        ids = [np.asarray(kmeans.assign(jnp.asarray(z.reshape(-1, z.shape[-1])), jnp.asarray(c))[0]).reshape(m.shape)
               for c in codebooks.centers]
        for b, index in enumerate(np.asarray(batch["index"])):
            if index >= 0:
                n = int(m[b].sum())
                yield int(index), [x[b, :n] for x in ids]


def cooccurrence(config: Any, codebooks: kmeans.Codebooks, data_path: str, split: str,
                 max_utterances: int = 2000, fn: Callable | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Phone labels and, per target set, the [phones, clusters] table of frame counts on
    `split` (frames inside an utterance's first and last aligned phone; utterances without
    alignment are passed over)."""
    from ssl_jax.data.shards import read_manifest

    manifest = read_manifest(data_path, split)
    stride = _encoder_config(config).downsampling
    phone_ids: dict[str, int] = {}
    tables = [np.zeros((0, len(c)), np.int64) for c in codebooks.centers]
    seen = 0
    for index, ids in split_targets(config, codebooks, data_path, split, fn):
        entry = manifest[index]
        phones = (entry.get("alignment") or {}).get("phones")
        if not phones:
            continue
        seen += 1
        n = len(ids[0])
        labels = frame_phones(entry, n, stride)
        first, last = phones[0][1] // stride, min(n, -(-phones[-1][2] // stride))
        for t_ in range(first, last):
            y = phone_ids.setdefault(labels[t_], len(phone_ids))
            for j, table in enumerate(tables):
                if y >= table.shape[0]:
                    tables[j] = table = np.concatenate([table, np.zeros((y + 1 - table.shape[0], table.shape[1]), np.int64)])
                table[y, ids[j][t_]] += 1
        if seen >= max_utterances:
            break
    if seen == 0:
        raise ValueError(f"split {split!r} of {data_path} has no utterance with a phone alignment to measure targets against")
    return list(phone_ids), tables


def measure(config: Any, codebooks: kmeans.Codebooks, data_path: str, split: str,
            max_utterances: int = 2000, fn: Callable | None = None) -> list[kmeans.ClusterQuality]:
    """Phone purity, cluster purity and PNMI of each target set on `split` (see `cooccurrence`)."""
    _, tables = cooccurrence(config, codebooks, data_path, split, max_utterances, fn)
    return [kmeans.quality(table) for table in tables]


def write_targets(config: Any, codebooks: kmeans.Codebooks, data_path: str, split: str, out_dir: str,
                  fn: Callable | None = None) -> list[str]:
    """Frame targets of every utterance of `split` as fairseq HuBERT label files: one file per
    target set, `OUT/<split>.km` (then `<split>.km1`, ...), one line of space-separated cluster
    ids per utterance in manifest order (50 Hz for a 320-sample stride). Training here never
    reads them; they are for inspection and for other toolkits."""
    from ssl_jax.data.shards import read_index

    count = int(read_index(data_path)["splits"][split]["num_utterances"])
    lines: dict[int, list[str]] = {}
    for index, ids in split_targets(config, codebooks, data_path, split, fn):
        lines[index] = [" ".join(map(str, x.tolist())) for x in ids]
    paths = []
    for j in range(len(codebooks.centers)):
        path = os.path.join(out_dir, f"{split}.km" + (str(j) if j else ""))
        with open(path, "w", encoding="utf-8") as f:
            for index in range(count):
                f.write((lines[index][j] if index in lines else "") + "\n")
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- cache


def cache_key(config: Any, data_path: str) -> str:
    """A name for the codebooks a recipe would fit on `data_path` (settings, features, data)."""
    t = config["objective"]["targets"]
    enc = _encoder_config(config)
    parts = {
        "source": t["source"],
        "num_clusters": [int(k) for k in t["num_clusters"]],
        "normalize": t.get("normalize", "none"),
        "kmeans": _kmeans_settings(config),
        "frames": [enc.frontend, enc.downsampling],
        "crop": [config["data"]["max_seconds"], config["data"]["min_seconds"], config["data"]["num_buckets"],
                 bool(config["data"]["normalize"]), int(config["train"]["batch_size"]), int(config["seed"])],
    }
    if t["source"] == "layer":
        from ssl_jax.training.checkpoint import resolve_step_dir

        parts.update(layer=int(t["layer"]), checkpoint=resolve_step_dir(t["checkpoint"]))
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{t['source']}-k{'_'.join(str(int(k)) for k in t['num_clusters'])}-{digest}"


def ensure_codebooks(config: Any, data_path: str, workdir: str) -> kmeans.Codebooks:
    """`objective.targets.codebook` when set; else the cached fit for this recipe and data
    (`DATA/kmeans/<key>.npz`, or under the workdir when the data folder is read-only), fitted
    now when absent."""
    path = config["objective"]["targets"].get("codebook", "")
    if path:
        return kmeans.Codebooks.load(path)
    name = cache_key(config, data_path) + ".npz"
    candidates = [os.path.join(data_path, "kmeans", name), os.path.join(workdir, "kmeans", name)]
    for c in candidates:
        if os.path.exists(c):
            log.info("k-means targets from %s", c)
            return kmeans.Codebooks.load(c)
    log.info("no k-means targets for this recipe yet: fitting them on %s (once; cached)", data_path)
    books = fit_codebooks(config, data_path)
    for c in candidates:
        try:
            books.save(c)
            log.info("k-means targets cached at %s", c)
            break
        except OSError:
            continue
    return books


# ----------------------------------------------------------------------------- command line


def run(config: Any, workdir: str, target_splits: tuple[str, ...] | None = None) -> dict:
    """Fits the recipe's codebooks on its training data, measures them on the validation split,
    writes `kmeans.npz`, `cluster.json`, `cooccurrence.npz` (`phones` and, per target set j,
    `counts_j`: [phones, clusters] frame counts) and the frame targets of `target_splits` (default: the
    validation split) under `workdir`; returns the report."""
    from ssl_jax.parallel import mesh as mesh_lib
    from ssl_jax.training.loop import shard_dir

    os.makedirs(workdir, exist_ok=True)
    data_path = shard_dir(config)
    mesh = mesh_lib.make_mesh(config.mesh)
    books = fit_codebooks(config, data_path, mesh)
    path = books.save(os.path.join(workdir, "kmeans.npz"))
    t0 = time.time()
    phones, tables = cooccurrence(config, books, data_path, config.data.eval_split)
    quality = [kmeans.quality(table) for table in tables]
    np.savez(os.path.join(workdir, "cooccurrence.npz"), phones=np.array(phones),
             **{f"counts_{j}": table for j, table in enumerate(tables)})
    labels = []
    for split in target_splits or (config.data.eval_split,):
        labels += write_targets(config, books, data_path, split, workdir)
    report = dict(books.meta, codebook=path, split=config.data.eval_split, measure_seconds=time.time() - t0,
                  quality=[q.__dict__ for q in quality], targets=labels)
    with open(os.path.join(workdir, "cluster.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def format_report(report: dict) -> str:
    lines = [f"k-means on {report['source']}" + (f" layer {report['layer']} of {report['checkpoint']}" if report["layer"] is not None else "")
             + f": {report['points_fitted']:,} frames in {report['fit_seconds']:.0f}s"]
    for k, q, inertia in zip(report["num_clusters"], report["quality"], report["seed_inertia_per_point"]):
        lines.append(f"  K={k}: phone purity {q['phone_purity']:.3f}, cluster purity {q['cluster_purity']:.3f}, "
                     f"PNMI {q['pnmi']:.3f} ({q['frames']:,} {report['split']} frames, {q['phones']} phones, "
                     f"{q['clusters_used']} clusters used); inertia per point {inertia:.3f}")
    lines.append(f"codebooks {report['codebook']} (objective.targets.codebook); frame targets "
                 + ", ".join(report["targets"]))
    return "\n".join(lines)


def _define_flags() -> None:
    """The command's flags (defined only when run as a command: `ssl_jax.train` imports this
    module and has flags of the same names)."""
    config_flags.DEFINE_config_file("config", None, "Recipe with an objective.targets section (configs/NAME.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Output folder: kmeans.npz, cluster.json, <split>.km.")
    flags.DEFINE_list("target_splits", [], "Splits whose frame targets to write (default: data.eval_split).")
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    cfg = flags.FLAGS.config
    if "targets" not in cfg.objective:
        sys.exit(f"error: objective {cfg.objective.name!r} has no objective.targets section to cluster for")
    print(format_report(run(cfg, flags.FLAGS.workdir, tuple(flags.FLAGS.target_splits) or None)), flush=True)


if __name__ == "__main__":
    from ssl_jax.training.config_check import check_overrides, user_errors

    check_overrides(sys.argv)
    _define_flags()
    app.run(user_errors(main))
