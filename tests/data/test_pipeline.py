"""Tests for ssl_jax/data/pipeline.py on small shard folders written here."""

import os
import threading
import time

import numpy as np
import pytest

from ssl_jax.data import pipeline as P
from ssl_jax.data.shards import ShardSource, ShardWriter

MAX = 16_000
KW = dict(batch_size=4, max_samples=MAX, min_samples=3_000, num_buckets=4, normalize=False,
          seed=3)


def _write(out: str, lengths: list[int], encoding: str = "pcm_s16le") -> None:
    rng = np.random.default_rng(0)
    with ShardWriter(out, "train", encoding=encoding, utterances_per_shard=7) as w:
        for i, n in enumerate(lengths):
            audio = (0.2 * rng.standard_normal(n) + 0.1).clip(-1, 1).astype(np.float32)
            w.add(audio, {"id": f"u{i:03d}"})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("shards"))
    lengths = list(np.random.default_rng(1).integers(1_000, 30_000, size=37))
    _write(out, [int(n) for n in lengths])
    return out


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_bucket_lengths():
    b = P.bucket_lengths(250_000, 5)
    assert len(b) == 5 and b == sorted(set(b))
    assert all(x % 320 == 0 for x in b) and b[-1] >= 250_000 and b[-1] - 250_000 < 320
    assert P.bucket_lengths(320, 8) == [320]
    with pytest.raises(ValueError):
        P.bucket_lengths(0, 3)


def test_train_batches_cover_epoch_and_respect_masks(shards):
    it = P.train_iterator(shards, "train", **KW)
    plan = it.plan
    src = ShardSource(shards, "train")
    kept = set(np.flatnonzero(src.num_samples >= KW["min_samples"]).tolist())
    assert plan.num_filtered == len(src) - len(kept) > 0
    buckets = P.bucket_lengths(MAX, KW["num_buckets"])
    batches = _take(it, plan.batches_per_epoch)
    seen, padded, total = [], 0, 0
    for b in batches:
        n = b["audio"].shape[1]
        assert n in buckets and b["audio"].shape == (4, n) and b["audio_mask"].shape == (4, n)
        assert b["audio"].dtype == np.float32 and b["lengths"].dtype == np.int32
        np.testing.assert_array_equal(b["audio_mask"].sum(1), b["lengths"])
        assert (b["audio"][~b["audio_mask"]] == 0).all()
        assert (b["lengths"] <= MAX).all() and (b["lengths"] > 0).all()
        # Each item sits in the smallest bucket that holds it, or was promoted upward.
        seen += b["index"].tolist()
        padded += int((~b["audio_mask"]).sum())
        total += b["audio_mask"].size
        for row, idx in enumerate(b["index"]):
            start, n_real = b["offset"][row], b["lengths"][row]
            np.testing.assert_array_equal(b["audio"][row, :n_real],
                                          src[idx]["audio"][start:start + n_real])
    assert set(seen) == kept  # every kept utterance once per epoch (plus fill duplicates)
    assert len(seen) - len(set(seen)) < KW["batch_size"]
    assert plan.padding_fraction == pytest.approx(padded / total)
    assert plan.padding_fraction < 0.5


def test_epochs_seeds_and_crops(shards):
    it = P.train_iterator(shards, "train", **KW)
    per = it.plan.batches_per_epoch
    e0, e1 = _take(it, per), _take(it, per)
    assert [b["index"].tolist() for b in e0] != [b["index"].tolist() for b in e1]
    assert _same(e0, _take(P.train_iterator(shards, "train", **KW), per))
    other = _take(P.train_iterator(shards, "train", **dict(KW, seed=4)), per)
    assert [b["index"].tolist() for b in e0] != [b["index"].tolist() for b in other]
    # Long utterances get random crops that change with the epoch.
    off0 = {i: o for b in e0 for i, o in zip(b["index"], b["offset"])}
    off1 = {i: o for b in e1 for i, o in zip(b["index"], b["offset"])}
    assert any(off0[i] != off1[i] for i in off0 if off0[i] or off1[i])


def test_normalize(shards):
    b = next(P.train_iterator(shards, "train", **dict(KW, normalize=True)))
    for row in range(4):
        x = b["audio"][row, :b["lengths"][row]]
        assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3


def test_resume_in_process(shards):
    ref = _take(P.train_iterator(shards, "train", **KW), 30)
    it = P.train_iterator(shards, "train", **KW)
    _take(it, 13)
    state = it.get_state()
    it2 = P.train_iterator(shards, "train", **KW)
    it2.set_state(state)
    assert _same(_take(it2, 17), ref[13:])


def test_resume_with_workers(shards):
    ref = _take(P.train_iterator(shards, "train", **KW), 14)
    it = P.train_iterator(shards, "train", num_workers=2, **KW)
    first = _take(it, 9)
    state = it.get_state()
    it.close()
    it2 = P.train_iterator(shards, "train", num_workers=2, **KW)
    it2.set_state(state)
    rest = _take(it2, 5)
    it2.close()
    assert _same(first, ref[:9]) and _same(rest, ref[9:])


class _Stalls:
    """Starts its worker processes on the first call, as Grain does, and yields one batch; then
    waits forever, as Grain may when a worker died."""

    def __init__(self):
        import multiprocessing

        self.workers = [multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,)) for _ in range(2)]

    def __next__(self):
        if self.workers[0].pid is not None:
            threading.Event().wait()
        for p in self.workers:
            p.start()
        return {"audio": np.zeros((1, 4), np.float32)}


def test_workers_killed_right_after_a_batch_end_the_next_wait_with_an_error():
    # The workers die between two calls, before any poll has seen them: the batch they made is
    # what says they existed.
    import signal

    stalls = _Stalls()
    watch = P.WorkerWatch(stalls, poll_seconds=0.05)
    next(watch)
    for p in stalls.workers:
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
    raised = []
    consumer = threading.Thread(target=lambda: raised.append(_error_of(lambda: next(watch))), daemon=True)
    consumer.start()
    consumer.join(30)
    assert raised and isinstance(raised[0], P.DataWorkerError), "still waiting after 30 s"
    assert "a data worker process died" in str(raised[0]) and "killed by signal 9" in str(raised[0])


def _error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    return None


def test_process_shares_are_disjoint_and_complete(shards):
    kw = dict(KW, batch_size=2)
    full = _take(P.train_iterator(shards, "train", **KW), 10)
    parts = [_take(P.train_iterator(shards, "train", process_index=p, process_count=2, **kw), 10)
             for p in range(2)]
    for g, a, b in zip(full, *parts):
        assert a["audio"].shape == b["audio"].shape == (2, g["audio"].shape[1])
        for k in g:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), g[k])


def test_eval_iterator_reads_only_this_process_rows(shards):
    whole = list(P.eval_iterator(shards, "train", batch_size=4, max_samples=MAX, num_buckets=3, normalize=False))
    parts = [list(P.eval_iterator(shards, "train", batch_size=2, max_samples=MAX, num_buckets=3, normalize=False,
                                  process_index=i, process_count=2)) for i in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for g, a, b in zip(whole, *parts):
        assert a["audio"].shape == b["audio"].shape == (2, g["audio"].shape[1])
        for k in ("audio", "audio_mask", "index"):
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), g[k])
    with pytest.raises(ValueError, match="outside"):
        P.eval_iterator(shards, "train", batch_size=2, max_samples=MAX, num_buckets=3, normalize=False,
                        process_index=2, process_count=2)


def test_eval_iterator_whole_split_once(shards):
    src = ShardSource(shards, "train")
    batches = list(P.eval_iterator(shards, "train", batch_size=4, max_samples=MAX, num_buckets=3,
                                   normalize=False))
    again = list(P.eval_iterator(shards, "train", batch_size=4, max_samples=MAX, num_buckets=3,
                                 normalize=False))
    assert _same(batches, again)
    idx = np.concatenate([b["index"] for b in batches])
    assert sorted(idx[idx >= 0].tolist()) == list(range(len(src)))
    n_empty = (-len(src)) % 4
    assert n_empty > 0 and (idx < 0).sum() == n_empty and (idx[len(idx) - n_empty:] < 0).all()
    last = batches[-1]
    assert not last["audio_mask"][last["index"] < 0].any()
    for b in batches:
        assert b["audio"].shape[1] in P.bucket_lengths(MAX, 3) and (b["offset"] == 0).all()
        for row, i in enumerate(b["index"]):
            if i >= 0:
                assert b["lengths"][row] == min(src.num_samples[i], MAX)


def test_corrupt_record_is_an_empty_item(tmp_path):
    from array_record.python import array_record_module as ar

    out = str(tmp_path)
    _write(out, [8_000] * 6)
    # Rewrite the first shard with one undecodable record (odd byte count).
    path = os.path.join(out, "train-00000.array_record")
    src = ShardSource(out, "train")
    records = [src._records()[i] for i in range(6)]
    records[2] = b"\x01\x02\x03"
    w = ar.ArrayRecordWriter(path, "group_size:1")
    for r in records:
        w.write(r)
    w.close()
    batches = list(P.eval_iterator(out, "train", batch_size=3, max_samples=MAX, num_buckets=1,
                                   normalize=True))
    lengths = np.concatenate([b["lengths"] for b in batches])
    assert lengths.tolist() == [8_000, 8_000, 0, 8_000, 8_000, 8_000]
    assert all(np.isfinite(b["audio"]).all() for b in batches)
    assert [b["unreadable"].tolist() for b in batches] == [[False, False, True], [False, False, False]]  # counted, for the trainer's guard
    # One in six is tolerated at 20%, not at 10%: the run stops with a message naming the setting.
    guard = P.UnreadableGuard(0.2, min_records=6)
    for b in batches:
        guard.update(b)
    assert (guard.records, guard.unreadable) == (6, 1)
    guard = P.UnreadableGuard(0.1, min_records=6)
    guard.update(batches[0])  # 1 of 3: not judged before 6 records
    with pytest.raises(RuntimeError, match="1 of the 6 records.*data.max_unreadable_fraction=0.1"):
        guard.update(batches[1])


def test_errors(shards, tmp_path):
    with pytest.raises(ValueError, match="min_samples"):
        P.train_iterator(shards, "train", **dict(KW, min_samples=10**9))
    with pytest.raises(KeyError, match="no split"):
        P.train_iterator(shards, "nope", **KW)
    with pytest.raises(FileNotFoundError):
        P.train_iterator(str(tmp_path), "train", **KW)


def test_non_finite_audio_is_an_empty_item(shards, monkeypatch):
    real = ShardSource.__getitem__

    def poisoned(self, i):
        item = real(self, i)
        if int(i) == 5:
            item["audio"] = np.full_like(item["audio"], np.nan)
        return item

    monkeypatch.setattr(ShardSource, "__getitem__", poisoned)
    batches = list(P.eval_iterator(shards, "train", batch_size=4, max_samples=MAX, num_buckets=2,
                                   normalize=True))
    assert all(np.isfinite(b["audio"]).all() for b in batches)
    idx = np.concatenate([b["index"] for b in batches])
    assert 5 not in idx and (idx >= 0).sum() == len(ShardSource(shards, "train")) - 1


def test_damaged_folder_is_a_clear_error(tmp_path):
    out = str(tmp_path)
    _write(out, [8_000] * 9)  # two shard files of 7 and 2 records
    with open(os.path.join(out, "train.jsonl"), "a") as f:
        f.write('{"id": "extra", "num_samples": 8000}\n')
    with pytest.raises(ValueError, match="damaged"):
        P.train_iterator(out, "train", **KW)
    os.remove(os.path.join(out, "train-00001.array_record"))
    with pytest.raises(FileNotFoundError, match="missing"):
        P.eval_iterator(out, "train", batch_size=2, max_samples=MAX, num_buckets=1,
                        normalize=False)


def test_embedded_corpus(tiny_corpus):
    it = P.train_iterator(tiny_corpus, "train", batch_size=4, max_samples=5 * 16_000,
                          min_samples=16_000, num_buckets=4, normalize=True, seed=0)
    buckets = P.bucket_lengths(5 * 16_000, 4)
    for b in _take(it, 4):
        assert b["audio"].shape[1] in buckets and np.isfinite(b["audio"]).all()
        assert (b["lengths"] >= 16_000).all()
    assert 0 <= it.plan.padding_fraction < 0.5
    src = ShardSource(tiny_corpus, "valid")
    idx = np.concatenate([b["index"] for b in P.eval_iterator(
        tiny_corpus, "valid", batch_size=4, max_samples=20 * 16_000, num_buckets=4,
        normalize=False)])
    assert sorted(idx[idx >= 0].tolist()) == list(range(len(src)))


def test_crop_to_bucket_trades_a_little_audio_for_less_padding(shards):
    kw = dict(KW, num_buckets=6)
    base = P.train_plan(shards, "train", **{k: v for k, v in kw.items() if k != "normalize"})
    it = P.train_iterator(shards, "train", crop_to_bucket=0.3, **kw)
    assert it.plan.padding_fraction < base.padding_fraction
    src = ShardSource(shards, "train")
    padded = total = 0
    for b in _take(it, it.plan.batches_per_epoch):
        padded += int((~b["audio_mask"]).sum())
        total += b["audio_mask"].size
        for row, idx in enumerate(b["index"]):
            n_real, start = b["lengths"][row], b["offset"][row]
            assert n_real >= 0.7 * min(src.num_samples[idx], MAX) - 1
            np.testing.assert_array_equal(b["audio"][row, :n_real],
                                          src[idx]["audio"][start:start + n_real])
    assert it.plan.padding_fraction == pytest.approx(padded / total)


# ----------------------------------------------------------------------------- augmentation

AUG = {"speed": {"prob": 0.7}, "pitch": {"prob": 0.5}, "reverb": {"prob": 0.5},
       "noise": {"prob": 0.5}, "babble": {"prob": 0.5, "speakers": (2, 3)},
       "telephone": {"prob": 0.3}}


@pytest.fixture
def small_banks(monkeypatch):
    from ssl_jax.data import augment

    monkeypatch.setattr(augment, "_NOISE_BANK_SECONDS", 5.0)
    monkeypatch.setattr(augment, "_BABBLE_BANK_SECONDS", 5.0)


def test_augmented_batches_keep_shapes_masks_and_speed_lengths(shards, small_banks):
    src = ShardSource(shards, "train")
    plain = P.train_iterator(shards, "train", **KW)
    it = P.train_iterator(shards, "train", augment=dict(AUG, clean_copy=True), **KW)
    buckets = P.bucket_lengths(MAX, KW["num_buckets"])
    changed = speeds = 0
    for b, p in zip(_take(it, 12), _take(plain, 12)):
        n = b["audio"].shape[1]
        assert n in buckets and b["audio"].shape == b["clean_audio"].shape == (4, n)
        assert b["audio"].dtype == np.float32 and np.isfinite(b["audio"]).all()
        np.testing.assert_array_equal(b["audio_mask"].sum(1), b["lengths"])
        assert (b["audio"][~b["audio_mask"]] == 0).all() and (b["clean_audio"][~b["audio_mask"]] == 0).all()
        np.testing.assert_array_equal(b["index"], p["index"])  # same plan, same utterances
        for row, idx in enumerate(b["index"]):
            f = min((0.9, 1.0, 1.1), key=lambda v: abs(v - b["speed"][row]))
            assert abs(f - b["speed"][row]) < 1e-6
            full = round(src.num_samples[idx] / f)  # soxr's output length
            assert b["lengths"][row] == min(full, MAX, n)
            if f == 1.0:  # no speed change: the same crop as without augmentation
                np.testing.assert_array_equal(b["clean_audio"][row], p["audio"][row])
            speeds += f != 1.0
            changed += not np.array_equal(b["audio"][row], b["clean_audio"][row])
    assert 0 < speeds < 48 and changed > 24
    assert "speed" not in p and "clean_audio" not in p


def test_augmentation_is_seeded_and_off_means_identical(shards, small_banks):
    a = _take(P.train_iterator(shards, "train", augment=AUG, **KW), 6)
    assert _same(a, _take(P.train_iterator(shards, "train", augment=AUG, **KW), 6))
    other = _take(P.train_iterator(shards, "train", augment=AUG, **dict(KW, seed=4)), 6)
    assert not any(np.array_equal(x["audio"], y["audio"]) for x, y in zip(a, other))
    off = {g: {"prob": 0.0} for g in AUG}
    assert _same(_take(P.train_iterator(shards, "train", augment=off, **KW), 6),
                 _take(P.train_iterator(shards, "train", **KW), 6))


def test_augmented_resume_in_process_and_with_workers(shards):
    # Full-size banks: worker processes import the module afresh and rebuild them from the seed.
    ref = _take(P.train_iterator(shards, "train", augment=AUG, **KW), 12)
    it = P.train_iterator(shards, "train", augment=AUG, **KW)
    _take(it, 5)
    it2 = P.train_iterator(shards, "train", augment=AUG, **KW)
    it2.set_state(it.get_state())
    assert _same(_take(it2, 3), ref[5:8])
    # Worker processes rebuild the noise and babble banks from the seed: the same batches.
    it = P.train_iterator(shards, "train", num_workers=2, augment=AUG, **KW)
    first = _take(it, 8)
    state = it.get_state()
    it.close()
    it2 = P.train_iterator(shards, "train", num_workers=2, augment=AUG, **KW)
    it2.set_state(state)
    rest = _take(it2, 4)
    it2.close()
    assert _same(first, ref[:8]) and _same(rest, ref[8:12])


def test_augmented_process_shares_match_the_global_batch(shards, small_banks):
    full = _take(P.train_iterator(shards, "train", augment=AUG, **KW), 4)
    parts = [_take(P.train_iterator(shards, "train", process_index=p, process_count=2,
                                    augment=AUG, **dict(KW, batch_size=2)), 4) for p in range(2)]
    for g, a, b in zip(full, *parts):
        for k in g:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), g[k])


def test_augment_errors(shards):
    with pytest.raises(ValueError, match="valid fields"):
        P.train_iterator(shards, "train", augment={"reverb": {"t60": (0.2, 0.4)}}, **KW)
