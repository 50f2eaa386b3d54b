"""Grain input pipeline: waveform shards -> padded, length-bucketed batches.

Every batch is planned in index space from the manifest lengths alone, so the whole pipeline
is a random-access `grain.MapDataset` over batch numbers: batch `g` of the infinite stream is a
pure function of (seed, g). That makes the iterator state a single position per worker, and a
restored iterator yields exactly the batches the uninterrupted one would, with or without
worker processes.

Per epoch e (seeded by (seed, e)): the kept utterances (at least `min_samples` long) are
permuted; each goes to the smallest bucket that holds its crop (`min(len, max_samples)`);
each bucket is cut into full global batches in permuted order, and the few left over are
promoted to the next bigger bucket (the last bucket's leftovers are completed with
utterances from the start of the epoch); the batch order is then permuted too. Only
`len(bucket_lengths(...))` shapes ever appear, and padding stays at most one bucket step
(optionally less: `crop_to_bucket` lets an utterance lose a small fraction of its samples to
fit the next smaller bucket).
Multi-host: every process plans the same global batches and reads only its own
`batch_size` rows of each, so all processes see the same bucket at every step.

Stages (Grain maps, run in the worker processes when there are any): read the planned
utterances -> [speed perturbation] -> crop -> [the other augmentations] -> normalise and pad.
The bracketed stages (`ssl_jax.data.augment`) exist only in training iterators whose
`augment` settings turn something on; they draw from (seed, batch number, row) too.

Batch (numpy): `audio` f32[batch, samples], `audio_mask` bool[batch, samples] (True = real
sample), `lengths` int32[batch]; and, for aligning labels or frame targets, `index` int32[batch]
(record number in the split, -1 for an empty item), `offset` int32[batch] (crop start) and
`unreadable` bool[batch] (a planned record the reader had to leave out: undecodable, not 1-D,
non-finite; the item is empty); with augmentation, `speed` f32[batch] and optionally `clean_audio` (see `train_iterator`).
Bucketing by length follows the usual sequence-bucketing practice of speech toolkits
(e.g. fairseq's `batch_by_size`), done here with fixed shapes for `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
import sys
import threading
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from ssl_jax.data import augment as augment_lib
from ssl_jax.data.shards import ShardSource

log = logging.getLogger(__name__)

# Number of addressable batches of the "infinite" training stream (fits an int64 index).
_STREAM_LENGTH = sys.maxsize // 2


def _u64(seed: int) -> int:
    """Any Python int seed as a non-negative 64-bit one (numpy seed sequences need that)."""
    return int(seed) & 0xFFFFFFFFFFFFFFFF


def bucket_lengths(max_samples: int, num_buckets: int, multiple: int = 320) -> list[int]:
    """Fixed bucket lengths in samples: evenly spaced up to `max_samples`, rounded up to `multiple`.

    Args:
        max_samples: the longest crop; the last bucket is `max_samples` rounded up to `multiple`.
        num_buckets: how many distinct lengths at most (duplicates after rounding are merged).
        multiple: every length is a multiple of it (320 = one wav2vec 2.0 frame at 16 kHz).

    Returns:
        Strictly increasing list of lengths.
    """
    if max_samples <= 0 or num_buckets <= 0 or multiple <= 0:
        raise ValueError(f"bucket_lengths needs positive arguments, got max_samples={max_samples}, "
                         f"num_buckets={num_buckets}, multiple={multiple}")
    out: list[int] = []
    for k in range(1, num_buckets + 1):
        length = -(-max_samples * k // num_buckets)
        length = -(-length // multiple) * multiple
        if not out or length > out[-1]:
            out.append(length)
    return out


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How a split is cut into batches (from manifest lengths only; no audio is read).

    Attributes:
        buckets: the bucket lengths in samples.
        num_utterances: utterances in the split.
        num_kept: utterances used (at least `min_samples` long).
        num_filtered: utterances dropped by the min-length filter.
        batches_per_epoch: global batches per epoch.
        padding_fraction: padded samples / all samples over one epoch of batches.
        bucket_counts: batches per bucket in one epoch.
    """

    buckets: tuple[int, ...]
    num_utterances: int
    num_kept: int
    num_filtered: int
    batches_per_epoch: int
    padding_fraction: float
    bucket_counts: tuple[int, ...]


def _group(order: np.ndarray, bucket_of: np.ndarray, num_buckets: int, global_batch: int,
           fill: np.ndarray | None) -> tuple[list[np.ndarray], list[int]]:
    """Cuts `order` (utterance ids) into batches of one bucket each, promoting leftovers upward.

    The last bucket's leftovers are completed from `fill` (training) or with -1 (empty items).
    Returns (rows of `global_batch` ids, bucket number of each row).
    """
    rows: list[np.ndarray] = []
    row_bucket: list[int] = []
    carry = np.zeros((0,), np.int64)
    ids_bucket = bucket_of[order]
    for k in range(num_buckets):
        members = np.concatenate([carry, order[ids_bucket == k]])
        full = len(members) // global_batch * global_batch
        for r in members[:full].reshape(-1, global_batch):
            rows.append(r)
            row_bucket.append(k)
        carry = members[full:]
    if len(carry):
        need = global_batch - len(carry)
        pad = np.resize(fill, need) if fill is not None else np.full((need,), -1, np.int64)
        rows.append(np.concatenate([carry, pad.astype(np.int64)]))
        row_bucket.append(num_buckets - 1)
    return rows, row_bucket


class _Planner:
    """Epoch plans of global batches; cheap to pickle into worker processes."""

    def __init__(self, lengths: np.ndarray, buckets: list[int], max_samples: int,
                 min_samples: int, global_batch: int, seed: int, train: bool,
                 crop_to_bucket: float = 0.0):
        self.buckets = np.asarray(buckets, np.int64)
        self.full = np.minimum(lengths, max_samples)
        self.crop = self.full
        self.bucket_of = np.searchsorted(self.buckets, self.crop, side="left")
        if crop_to_bucket > 0:
            # Cut an utterance down to the next smaller bucket when that loses little of it.
            lower = self.bucket_of - 1
            lower_len = self.buckets[np.maximum(lower, 0)]
            ok = ((lower >= 0) & (lower_len >= self.crop * (1 - crop_to_bucket))
                  & (lower_len >= min_samples))
            self.bucket_of = np.where(ok, lower, self.bucket_of)
            self.crop = np.where(ok, lower_len, self.crop)
        self.kept = np.flatnonzero(lengths >= max(min_samples, 1) if train else lengths >= 0)
        self.global_batch, self.seed, self.train = global_batch, seed, train
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        rows, _ = self._make(0)
        self.batches_per_epoch = len(rows)

    def _make(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self.train:
            rng = np.random.default_rng([_u64(self.seed), epoch])
            order = rng.permutation(self.kept)
            rows, row_bucket = _group(order, self.bucket_of, len(self.buckets), self.global_batch,
                                      fill=order)
            perm = rng.permutation(len(rows))
            rows, row_bucket = [rows[i] for i in perm], [row_bucket[i] for i in perm]
        else:
            rows, row_bucket = _group(self.kept, self.bucket_of, len(self.buckets),
                                      self.global_batch, fill=None)
        return (np.stack(rows) if rows else np.zeros((0, self.global_batch), np.int64),
                np.asarray(row_bucket, np.int64))

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows [batches, global_batch] of utterance ids (-1 = empty), bucket id per row)."""
        # Reader threads may work on two epochs at once near a boundary: keep the last two,
        # and never read a plan back from the shared dict after another thread may replace it.
        plan = self._cache.get(epoch)
        if plan is None:
            plan = self._make(epoch)
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1} | {epoch: plan}
        return plan

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def describe(self, num_utterances: int) -> BatchPlan:
        rows, row_bucket = self.epoch(0)
        lengths = self.buckets[row_bucket]
        # A row holds min(utterance, bucket) samples of each item (promoted items are not cut).
        real = np.where(rows >= 0, np.minimum(self.full[np.maximum(rows, 0)], lengths[:, None]),
                        0).sum()
        total = int(lengths.sum()) * self.global_batch
        return BatchPlan(
            buckets=tuple(int(b) for b in self.buckets), num_utterances=num_utterances,
            num_kept=len(self.kept), num_filtered=num_utterances - len(self.kept),
            batches_per_epoch=len(rows),
            padding_fraction=float(1.0 - real / total) if total else 0.0,
            bucket_counts=tuple(int((row_bucket == k).sum()) for k in range(len(self.buckets))))


def normalize_audio(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance of one utterance `[samples]` (as wav2vec 2.0 feature extractors)."""
    if audio.size == 0:
        return audio
    return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)


def _load(source: ShardSource, idx: int) -> np.ndarray | None:
    """Record `idx` as float32 [samples], or None (logged) when it cannot be used."""
    try:
        audio = np.asarray(source[idx]["audio"], np.float32)
    except Exception as e:  # a corrupt record must not stop training
        log.warning("skipping unreadable record %d of %s: %s", idx, source, e)
        return None
    if audio.ndim != 1:
        log.warning("skipping record %d of %s: audio shape %s is not [samples]",
                    idx, source, audio.shape)
        return None
    if not np.isfinite(audio).all():
        log.warning("skipping record %d of %s: non-finite samples", idx, source)
        return None
    return audio


class _ReadBatch(grain.transforms.Map):
    """Batch number -> this process's rows of the planned global batch, as whole utterances.

    The element passed between the stages: `batch` (number in the stream), `epoch`, `length`
    (the bucket, samples), `ids` int64[batch] (record numbers, -1 = empty), `rows`
    int64[batch] (global row of each item), `wavs` (list of float32 [samples], None = empty).
    """

    def __init__(self, source: ShardSource, planner: _Planner, *, batch_size: int,
                 process_index: int):
        self.source, self.planner = source, planner
        self.batch_size, self.process_index = batch_size, process_index

    def map(self, g: int) -> dict:
        g = int(g)
        epoch, j = divmod(g, self.planner.batches_per_epoch)
        rows, row_bucket = self.planner.epoch(epoch)
        lo = self.process_index * self.batch_size
        ids = rows[j, lo:lo + self.batch_size].astype(np.int64)
        wavs = [None if idx < 0 else _load(self.source, int(idx)) for idx in ids]
        unreadable = np.array([idx >= 0 and w is None for idx, w in zip(ids, wavs)], bool)
        return {"batch": g, "epoch": epoch, "length": int(self.planner.buckets[row_bucket[j]]),
                "ids": ids, "rows": np.arange(lo, lo + self.batch_size, dtype=np.int64),
                "wavs": wavs, "unreadable": unreadable}


class _Crop(grain.transforms.Map):
    """Crops each utterance to min(its length, `max_samples`, the bucket); sets `offset`.

    Training crops start at a random offset seeded by (seed, epoch, record); eval crops at 0.
    """

    def __init__(self, seed: int, max_samples: int, train: bool):
        self.seed, self.max_samples, self.train = seed, max_samples, train

    def _offset(self, epoch: int, idx: int, excess: int) -> int:
        if not self.train or excess <= 0:
            return 0
        rng = np.random.default_rng([_u64(self.seed), epoch, idx, 1])
        return int(rng.integers(0, excess + 1))

    def map(self, element: dict) -> dict:
        offsets = np.zeros((len(element["wavs"]),), np.int32)
        for b, wav in enumerate(element["wavs"]):
            if wav is None:
                continue
            target = min(len(wav), self.max_samples, element["length"])
            start = self._offset(element["epoch"], int(element["ids"][b]), len(wav) - target)
            element["wavs"][b] = wav[start:start + target]
            offsets[b] = start
        element["offset"] = offsets
        return element


def _pad(wavs: list[np.ndarray | None], length: int, normalize: bool) -> np.ndarray:
    audio = np.zeros((len(wavs), length), np.float32)
    for b, wav in enumerate(wavs):
        if wav is not None:
            audio[b, :len(wav)] = normalize_audio(wav) if normalize else wav
    return audio


class _Collate(grain.transforms.Map):
    """Crops -> the padded batch dict of the module docstring (normalised per item if asked)."""

    def __init__(self, normalize: bool):
        self.normalize = normalize

    def map(self, element: dict) -> dict[str, np.ndarray]:
        wavs, length = element["wavs"], element["length"]
        lengths = np.array([0 if w is None else len(w) for w in wavs], np.int32)
        index = np.array([-1 if w is None else i for w, i in zip(wavs, element["ids"])], np.int32)
        mask = np.arange(length)[None, :] < lengths[:, None]
        batch = {"audio": _pad(wavs, length, self.normalize), "audio_mask": mask,
                 "lengths": lengths, "index": index, "offset": element["offset"],
                 "unreadable": element["unreadable"]}
        if "speed" in element:
            batch["speed"] = element["speed"]
        if "clean" in element:
            batch["clean_audio"] = _pad(element["clean"], length, self.normalize)
        return batch


_RERUN = ("the batches it owed will never come. The log above may say why (out of memory: lower "
          "data.num_workers or the batch size); rerun to resume from the latest checkpoint.")


class DataWorkerError(RuntimeError):
    """A data worker process died; the command line prints it on one line."""


class WorkerWatch:
    """A multi-worker Grain iterator whose worker processes are watched: a worker that dies
    (killed, out of memory, a crash in native code) ends the wait for the next batch with a
    clear error, where Grain may wait for it forever. Everything else (`get_state`,
    `set_state`, `plan`) is the wrapped iterator's.

    Each batch is fetched in a daemon thread while this one polls the workers every
    `poll_seconds`; a worker counts once it has been seen alive at a poll or after a batch.
    """

    def __init__(self, it: grain.DatasetIterator, poll_seconds: float = 0.5):
        self._it = it
        self._poll = poll_seconds
        self._workers: dict[int, multiprocessing.process.BaseProcess] = {}
        self._pending: queue.Queue | None = None

    def __iter__(self) -> WorkerWatch:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._pending is None:
            self._pending = queue.Queue(1)
            threading.Thread(target=self._fetch, args=(self._pending,), daemon=True).start()
        while True:
            self._note_workers()
            try:
                ok, value = self._pending.get(timeout=self._poll)
            except queue.Empty:
                self._check()
                continue
            self._pending = None
            if not ok:
                raise value
            # The workers that made this batch are alive now: noted here, a worker killed before
            # the next call still counts (`active_children` no longer lists a dead one).
            self._note_workers()
            return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._it, name)

    def _fetch(self, out: queue.Queue) -> None:
        try:
            out.put((True, next(self._it)))
        except RuntimeError as e:  # Grain's own report of a dead worker, when it notices first
            died = "terminated unexpectedly" in str(e)
            out.put((False, DataWorkerError(f"a data worker process died ({e}); {_RERUN}") if died else e))
        except BaseException as e:  # handed to the consumer, which raises it
            out.put((False, e))

    def _note_workers(self) -> None:
        for p in multiprocessing.active_children():
            self._workers.setdefault(p.pid, p)

    def _check(self) -> None:
        dead = [p for p in self._workers.values() if p.exitcode not in (None, 0)]
        if dead:
            how = ", ".join(f"pid {p.pid} " + (f"killed by signal {-p.exitcode}" if p.exitcode < 0 else
                                                f"exit status {p.exitcode}") for p in dead)
            raise DataWorkerError(f"a data worker process died ({how}); {_RERUN}")


def _ensure_flags_parsed() -> None:
    """Grain's worker processes read absl flags; outside an absl app nothing has parsed them."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _open(shard_dir: str, split: str) -> ShardSource:
    """The split's source, with its shard files checked against the manifest up front."""
    source = ShardSource(shard_dir, split)
    missing = [p for p in source._paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{shard_dir} split {split!r}: shard files missing: {missing}")
    records = len(source._records())
    if records != len(source):
        raise ValueError(f"{shard_dir} split {split!r}: {records} records in the shards but "
                         f"{len(source)} lines in {split}.jsonl; the folder is damaged")
    return source


def _check(batch_size: int, max_samples: int, num_buckets: int,
           crop_to_bucket: float = 0.0) -> None:
    if not 0.0 <= crop_to_bucket < 1.0:
        raise ValueError(f"crop_to_bucket must be in [0, 1), got {crop_to_bucket}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    if num_buckets <= 0:
        raise ValueError(f"num_buckets must be positive, got {num_buckets}")


def train_plan(shard_dir: str, split: str, *, batch_size: int, max_samples: int,
               min_samples: int, num_buckets: int, seed: int, process_count: int = 1,
               crop_to_bucket: float = 0.0) -> BatchPlan:
    """The `BatchPlan` that `train_iterator` with the same arguments follows."""
    _check(batch_size, max_samples, num_buckets)
    source = _open(shard_dir, split)
    planner = _Planner(source.num_samples, bucket_lengths(max_samples, num_buckets), max_samples,
                       min_samples, batch_size * process_count, seed, train=True,
                       crop_to_bucket=crop_to_bucket)
    return planner.describe(len(source))


class UnreadableGuard:
    """Counts the records the reader had to leave out (`unreadable` bool[batch] in every batch:
    undecodable, not 1-D, non-finite) and stops the run once they pass a share of the records asked for: a
    few bad files are skipped, a systematic decoding bug is not trained through.

    Args:
        max_fraction: the share of unreadable records tolerated (`data.max_unreadable_fraction`).
        min_records: the share is judged only after this many records.
    """

    def __init__(self, max_fraction: float, min_records: int = 64):
        self.max_fraction, self.min_records = float(max_fraction), int(min_records)
        self.records = 0
        self.unreadable = 0

    def update(self, batch: Mapping[str, Any]) -> None:
        """Adds a batch's counts; raises RuntimeError past the tolerated share."""
        bad = int(np.asarray(batch.get("unreadable", False)).sum())
        self.records += int((np.asarray(batch["index"]) >= 0).sum()) + bad
        self.unreadable += bad
        if self.records >= self.min_records and self.unreadable > self.max_fraction * self.records:
            raise RuntimeError(
                f"{self.unreadable} of the {self.records} records read so far could not be read (more than "
                f"data.max_unreadable_fraction={self.max_fraction:g}); the log names each and why. Fix or "
                "re-prepare the shards, or raise data.max_unreadable_fraction to train on the rest."
            )


def train_iterator(shard_dir: str, split: str, *, batch_size: int, max_samples: int,
                   min_samples: int, num_buckets: int, normalize: bool, seed: int,
                   num_workers: int = 0, process_index: int = 0, process_count: int = 1,
                   buffer_size: int = 2, crop_to_bucket: float = 0.0,
                   augment: Mapping[str, Any] | augment_lib.AugmentSettings | None = None
                   ) -> grain.DatasetIterator:
    """Infinite, seeded, epoch-aware iterator of training batches (see the module docstring).

    Args:
        shard_dir: a shard folder (`index.json`).
        split: the split to read.
        batch_size: utterances per batch on this process.
        max_samples: longer utterances are randomly cropped to this many samples; the crop
            offset is seeded by (seed, epoch, utterance).
        min_samples: shorter utterances are left out (counted in `it.plan.num_filtered`).
        num_buckets: number of fixed bucket lengths (`bucket_lengths(max_samples, num_buckets)`).
        normalize: zero-mean unit-variance per utterance over its real samples.
        seed: seeds the per-epoch permutations and the crops.
        num_workers: Grain worker processes; 0 reads in this process.
        process_index, process_count: this host's share of every global batch.
        buffer_size: batches prefetched per worker (or by the in-process reader).
        crop_to_bucket: an utterance may lose up to this fraction of its samples (random
            crop) to fit the next smaller bucket instead of being padded up; 0 never cuts
            utterances shorter than `max_samples`.
        augment: the `data.augment` section (`ssl_jax.data.augment`); None or all
            probabilities 0 = no augmentation. Its draws derive from (seed, batch number,
            global row), so resuming and the split over processes stay exact. With it on,
            batches also carry `speed` f32[batch] (each item's speed factor; `offset` then
            counts samples of the perturbed utterance) and, with `clean_copy`, `clean_audio`.

    A saved state restores into an iterator built with the same arguments (including
    `num_workers`: Grain's state records one position per worker).

    Returns:
        A Grain `DatasetIterator` with `get_state()`/`set_state()`; `it.plan` is its `BatchPlan`.
    """
    _check(batch_size, max_samples, num_buckets, crop_to_bucket)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    source = _open(shard_dir, split)
    planner = _Planner(source.num_samples, bucket_lengths(max_samples, num_buckets), max_samples,
                       min_samples, batch_size * process_count, seed, train=True,
                       crop_to_bucket=crop_to_bucket)
    plan = planner.describe(len(source))
    if plan.num_kept == 0:
        raise ValueError(f"{shard_dir} split {split!r}: none of its {len(source)} utterances is at "
                         f"least min_samples={min_samples} long")
    settings = augment_lib.settings_from_config(augment)
    ds = grain.MapDataset.range(_STREAM_LENGTH).map(
        _ReadBatch(source, planner, batch_size=batch_size, process_index=process_index))
    augmenter = augment_lib.Augmenter(settings, seed, source) if settings.active else None
    if augmenter is not None:
        ds = ds.map(augment_lib.SpeedPerturb(augmenter))
    ds = ds.map(_Crop(seed, max_samples, train=True))
    if augmenter is not None:
        ds = ds.map(augment_lib.Augment(augmenter))
    ds = ds.map(_Collate(normalize))
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1 if num_workers else 2,
                                                 prefetch_buffer_size=buffer_size))
    if num_workers > 0:
        _ensure_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=num_workers, per_worker_buffer_size=buffer_size))
    it = iter(it_ds)
    if num_workers > 0:
        it = WorkerWatch(it)
    it.plan = plan
    log.info("train pipeline %s/%s: %d of %d utterances, %d batches/epoch, buckets %s, "
             "padding %.1f%%", shard_dir, split, plan.num_kept, plan.num_utterances,
             plan.batches_per_epoch, list(plan.buckets), 100 * plan.padding_fraction)
    return it


def eval_iterator(shard_dir: str, split: str, *, batch_size: int, max_samples: int,
                  num_buckets: int, normalize: bool, process_index: int = 0,
                  process_count: int = 1) -> grain.DatasetIterator:
    """Finite, deterministic iterator over every utterance of a split, once.

    Utterances are grouped by bucket in record order; longer ones are truncated to their first
    `max_samples` samples. The last batch is completed with empty items (mask all False,
    `index` -1). `it.plan` is its `BatchPlan`. With `process_count` > 1, the global batches
    hold `batch_size x process_count` utterances and this process reads only its
    `batch_size` rows of each (rows process_index x batch_size onwards).
    """
    _check(batch_size, max_samples, num_buckets)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    source = _open(shard_dir, split)
    planner = _Planner(source.num_samples, bucket_lengths(max_samples, num_buckets), max_samples,
                       0, batch_size * process_count, 0, train=False)
    ds = (grain.MapDataset.range(planner.batches_per_epoch)
          .map(_ReadBatch(source, planner, batch_size=batch_size, process_index=process_index))
          .map(_Crop(0, max_samples, train=False))
          .map(_Collate(normalize)))
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))
    it.plan = planner.describe(len(source))
    return it
