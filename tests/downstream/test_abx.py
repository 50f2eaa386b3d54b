"""ABX: DTW against a reference loop, triplet rules, errors of synthetic features, item cutting
from alignments, and the ROOT/SPEAKER/WORD.wav folder reader."""

import collections
import itertools
import json
import os

import numpy as np
import pytest

from ssl_jax.data.shards import ShardSource, read_manifest
from ssl_jax.downstream import abx
from tests.downstream import abx_fakes


# --------------------------------------------------------------------------- DTW

@pytest.mark.parametrize("distance", ["angular", "cosine"])
def test_dtw_batch_matches_reference_loop(distance):
    rng = np.random.default_rng(0)
    n, r_max, c_max, dim = 12, 7, 9, 5
    rows = rng.integers(1, r_max + 1, size=n)
    cols = rng.integers(1, c_max + 1, size=n)
    rows[:3], cols[:3] = [1, 1, r_max], [1, c_max, 1]
    x = rng.standard_normal((n, r_max, dim)).astype(np.float32)
    y = rng.standard_normal((n, c_max, dim)).astype(np.float32)
    # Padding holds garbage that must not leak into the result.
    for b in range(n):
        x[b, rows[b]:] = 1e3
        y[b, cols[b]:] = -1e3
    got = np.asarray(abx.dtw_batch(x, y, rows, cols, distance=distance))
    want = [abx_fakes.reference_dtw(x[b, :rows[b]], y[b, :cols[b]], distance) for b in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_dtw_ties_follow_the_reference_back_trace():
    # Small integer distances: many equal-cost paths, so the tie rule decides the path length.
    rng = np.random.default_rng(3)
    n, r_max, c_max = 64, 6, 8
    d = rng.integers(0, 3, size=(n, r_max, c_max)).astype(np.float32)
    rows, cols = rng.integers(1, r_max + 1, size=n), rng.integers(1, c_max + 1, size=n)
    got = abx.dtw_costs(d, rows, cols)
    want = [abx_fakes.reference_dtw_matrix(d[b, :rows[b], :cols[b]]) for b in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_pair_dtw_buckets_match_reference_loop():
    rng = np.random.default_rng(1)
    lengths = [1, 3, 8, 9, 17, 30, 41]  # several padded shapes
    frames = [rng.standard_normal((t, 6)).astype(np.float32) for t in lengths]
    pairs = np.array([(i, j) for i, j in itertools.product(range(len(lengths)), repeat=2)])
    got = abx.pair_dtw(frames, pairs)
    want = [abx_fakes.reference_dtw(frames[i], frames[j]) for i, j in pairs]
    # arccos is steep near cos = 1: an item against itself is 0 only to ~1e-4 in float32.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_dtw_is_normalised_by_path_length():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((11, 8)).astype(np.float32)
    stretched = np.repeat(x, [1, 2, 3, 1, 1, 2, 1, 4, 1, 1, 2], axis=0)
    e1, e2 = np.eye(8, dtype=np.float32)[:2]
    cases = [(x, x), (x, stretched), (stretched, x),
             (e1[None], np.stack([e2] * 3)),  # 3 cells of 0.5 on a 3-cell path
             (np.stack([e1, e1]), np.stack([e2, e2]))]  # diagonal: 2 cells of 0.5 on 2 cells
    got = abx.pair_dtw([a for pair in cases for a in pair], np.arange(2 * len(cases)).reshape(-1, 2))
    np.testing.assert_allclose(got[:3], 0.0, atol=1e-3)
    np.testing.assert_allclose(got[3:], [0.5, 0.5], atol=1e-6)


# --------------------------------------------------------------------------- triplets

def _brute_force(items):
    out = set()
    for a, b, x in itertools.product(range(len(items)), repeat=3):
        A, B, X = items[a], items[b], items[x]
        if (A.speaker == B.speaker != X.speaker and A.label == X.label != B.label
                and A.context == B.context == X.context):
            out.add((a, b, x))
    return out


def test_triplets_follow_the_rules_and_are_balanced():
    items = abx_fakes.grid_items(["a", "b", "c"], ["s1", "s2", "s3"], contexts=["x+y", "y+z"], per_cell=2)
    items += abx_fakes.grid_items(["a"], ["s1", "s2"], contexts=["x+y"], per_cell=6, seed=1)  # a crowd
    items = [abx.Item(i, it.start, it.end, it.label, it.context, it.speaker) for i, it in enumerate(items)]
    possible = _brute_force(items)
    everything = abx.make_triplets(items, 10**6, seed=0)
    assert everything.num_possible == len(possible)
    assert set(map(tuple, everything.abx.tolist())) == possible

    t = abx.make_triplets(items, 150, seed=3)
    got = list(map(tuple, t.abx.tolist()))
    assert len(got) == 150 == len(set(got)) and set(got) <= possible
    for a, b, x in got:
        A, B, X = items[a], items[b], items[x]
        assert A.speaker == B.speaker and X.speaker != A.speaker
        assert A.label == X.label and B.label != A.label
        assert A.context == B.context == X.context
    # Balanced: per-cell counts differ by at most one among cells that could hold more.
    cell = collections.Counter((items[a].context, items[a].label, items[b].label, items[a].speaker,
                                items[x].speaker) for a, b, x in got)
    assert len(cell) == t.num_cells and max(cell.values()) - min(cell.values()) <= 1
    np.testing.assert_array_equal(abx.make_triplets(items, 150, seed=3).abx, t.abx)
    assert not np.array_equal(abx.make_triplets(items, 150, seed=4).abx, t.abx)
    # More cells than budget: one triplet in each of `max_triplets` distinct cells.
    few = abx.make_triplets(items, 20, seed=0).abx
    cells = {(items[a].context, items[a].label, items[b].label, items[a].speaker, items[x].speaker)
             for a, b, x in few}
    assert len(few) == len(cells) == 20


def test_weights_average_like_libri_light():
    items = abx_fakes.grid_items(["a", "b", "c"], ["s1", "s2", "s3"], contexts=["x", "y"], per_cell=2, seed=5)
    trip = abx.make_triplets(items, 90, seed=0).abx
    trip = trip[np.random.default_rng(0).random(len(trip)) < 0.7]  # unbalanced on purpose
    err = np.random.default_rng(1).random(len(trip)) < 0.3
    # Nested means: cell -> (context, speaker X) -> speaker A -> label pair.
    tree = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    for (a, b, x), e in zip(trip, err):
        A, B, X = items[a], items[b], items[x]
        tree[(A.label, B.label)][A.speaker][(A.context, X.speaker)].append(e)
    want = np.mean([np.mean([np.mean([np.mean(c) for c in spk.values()]) for spk in pair.values()])
                    for pair in tree.values()])
    w = abx.abx_weights(items, trip)
    np.testing.assert_allclose(w.sum(), 1.0)
    np.testing.assert_allclose(w @ err, want)


def test_label_split_keeps_halves_apart():
    items = abx_fakes.grid_items(list("abcdefgh"), ["s1", "s2"])
    dev = abx.split_labels(items, seed=0)
    dev_labels = {it.label for it, d in zip(items, dev) if d}
    test_labels = {it.label for it, d in zip(items, dev) if not d}
    assert len(dev_labels) == len(test_labels) == 4 and not dev_labels & test_labels
    with pytest.raises(ValueError, match=">= 4 labels"):
        abx.split_labels(items[:6], seed=0)


# --------------------------------------------------------------------------- evaluation

def _word_setup():
    items = abx_fakes.grid_items([f"w{k}" for k in range(10)], [f"s{k}" for k in range(5)], per_cell=2)
    return items, abx_fakes.label_features(items)


def test_label_features_score_zero_and_noise_one_half():
    items, feats = _word_setup()
    res = abx.evaluate_abx(feats, 50.0, items, max_triplets=3000, seed=0, log=lambda s: None)
    assert res.triplets.shape[0] == 3000 and res.num_possible > 3000
    assert res.layer == 1
    assert res.error == 0.0 and res.interval == (0.0, 0.0) and res.layer_errors[1] == 0.0
    assert abs(res.layer_errors[0] - 0.5) < 0.05
    assert res.layer_errors[2] > 0.3  # the speaker does not tell the words apart
    noise = abx.bootstrap(res.errors[:, res.is_test], res.weights[res.is_test], res.units[res.is_test])
    assert noise.shape == (3, abx.NUM_RESAMPLES)
    lo, hi = np.percentile(noise[0], [2.5, 97.5])
    assert lo < res.test_errors[0] < hi and hi - lo < 0.2
    np.testing.assert_array_equal(noise[1], res.resamples)
    # Dev and test share no item, and each half's weights average like Libri-light.
    dev_items, test_items = set(res.triplets[~res.is_test].ravel()), set(res.triplets[res.is_test].ravel())
    assert not dev_items & test_items
    np.testing.assert_allclose(res.weights[res.is_test].sum(), 1.0)
    num, den = res.test_unit_sums(0)
    np.testing.assert_allclose(num.sum() / den.sum(), res.test_errors[0])
    assert json.dumps(res.summary())


def test_ties_count_as_errors():
    items, feats = _word_setup()
    flat = {u: np.ones_like(f) for u, f in feats.items()}  # every distance is 0
    res = abx.evaluate_abx(flat, 50.0, items, max_triplets=200, seed=0, log=lambda s: None)
    np.testing.assert_allclose(res.layer_errors, 1.0)


def test_layers_in_several_passes_and_lazy_fetch_agree():
    items, feats = _word_setup()
    calls = collections.Counter()

    def fetch(u):
        calls[u] += 1
        return feats[u].astype(np.float32)

    one = abx.evaluate_abx(feats, 50.0, items, max_triplets=400, seed=1, log=lambda s: None)
    three = abx.evaluate_abx(fetch, 50.0, items, max_triplets=400, seed=1, max_cache_bytes=1,
                             log=lambda s: None)
    np.testing.assert_array_equal(one.errors, three.errors)
    np.testing.assert_array_equal(one.resamples, three.resamples)
    assert max(calls.values()) == 3  # one layer per pass, each utterance once per pass


def test_paired_bootstrap_shares_resamples():
    items, feats = _word_setup()
    noisy = {u: f + np.float16(2.0) * np.random.default_rng(u).standard_normal(f.shape).astype(np.float16)
             for u, f in feats.items()}
    kw = dict(max_triplets=1500, seed=2, log=lambda s: None)
    clean = abx.evaluate_abx(feats, 50.0, items, **kw)
    blurred = abx.evaluate_abx(noisy, 50.0, items, **kw)
    same = abx.paired_bootstrap(clean, clean)
    assert same["delta"] == 0.0 and same["p_value"] == 1.0
    cmp = abx.paired_bootstrap(clean, blurred)
    assert cmp["delta"] > 0 and cmp["interval"][0] > 0 and cmp["p_value"] < 0.05
    other_seed = abx.evaluate_abx(feats, 50.0, items, max_triplets=1500, seed=3, log=lambda s: None)
    with pytest.raises(ValueError, match="same items, triplets"):
        abx.paired_bootstrap(clean, other_seed)


def test_frame_range_convention():
    item = abx.Item(0, 480, 1440, "a", "", "s")  # hop 320: frame centres 160, 480, 800, 1120, 1440
    assert abx.frame_range(item, 10, 50.0) == (1, 4)
    assert abx.frame_range(abx.Item(0, 900, 1500, "a", "", "s"), 10, 50.0) == (3, 5)
    assert abx.frame_range(abx.Item(0, 500, 560, "a", "", "s"), 10, 50.0) == (1, 2)  # no centre inside
    assert abx.frame_range(abx.Item(0, 9000, 9600, "a", "", "s"), 10, 50.0) == (9, 10)  # past the end
    assert abx.frame_range(abx.Item(0, 0, 16000, "a", "", "s"), 100, 100.0) == (0, 100)


# --------------------------------------------------------------------------- items from data

def test_triphone_items_cut_from_alignment():
    phones = [["sil", 0, 1600], ["h", 1600, 2400], ["e", 2400, 4000], ["l", 4000, 4100],
              ["o", 4100, 6400], ["u", 6400, 7000], ["sil", 7000, 8000]]
    manifest = [{"id": "u0", "speaker": "s1", "num_samples": 8000, "text": "hello",
                 "alignment": {"phones": phones, "words": [["hello", 1600, 7000]]}},
                {"id": "u1", "speaker": "s2", "num_samples": 100}]
    items = abx.triphone_items(manifest, min_phone_samples=160)
    assert items == [abx.Item(0, 1600, 4100, "e", "h+l", "s1"),  # "l" (100 samples) is too short
                     abx.Item(0, 4000, 7000, "o", "l+u", "s1")]
    assert len(abx.triphone_items(manifest, min_phone_samples=0)) == 3
    bad = [dict(manifest[0], alignment={"phones": [["a", 0, 10], ["b", 5, 20], ["c", 20, 30]]})]
    with pytest.raises(ValueError, match="starts before"):
        abx.triphone_items(bad)
    with pytest.raises(ValueError, match="no speaker"):
        abx.triphone_items([dict(manifest[0], speaker="")])
    with pytest.raises(ValueError, match="no triphones"):
        abx.triphone_items(manifest[1:])


def test_word_items_from_manifest():
    manifest = [{"id": "a", "task": "word", "text": " Yes ", "speaker": "s1", "num_samples": 4000},
                {"id": "b", "task": "sentence", "text": "no way", "speaker": "s1", "num_samples": 9000},
                {"id": "c", "task": "word", "text": "yes", "speaker": "s2", "num_samples": 5000}]
    assert abx.word_items(manifest) == [abx.Item(0, 0, 4000, "yes", "", "s1"),
                                        abx.Item(2, 0, 5000, "yes", "", "s2")]
    with pytest.raises(ValueError, match="no isolated words"):
        abx.word_items(manifest[1:2])


def test_folder_dataset_skips_and_converts(tmp_path):
    root = tmp_path / "words"
    abx_fakes.write_tone(str(root / "ann" / "yes.wav"), 300)
    abx_fakes.write_tone(str(root / "ann" / "no.flac"), 500)
    abx_fakes.write_tone(str(root / "bob" / "yes.wav"), 320, sr=44_100, channels=2)
    abx_fakes.write_tone(str(root / "bob" / "no.wav"), 520, seconds=0.0)  # empty
    (root / "bob" / "maybe.wav").write_bytes(b"RIFF not really a wave file")
    abx_fakes.write_tone(str(root / "cy" / "no.wav"), 540, seconds=0.02)  # too short
    out = abx.folder_dataset(str(root), str(tmp_path / "shards"))
    manifest = read_manifest(out, abx.FOLDER_SPLIT)
    assert sorted((m["speaker"], m["text"], m["task"]) for m in manifest) == [
        ("ann", "no", "word"), ("ann", "yes", "word"), ("bob", "yes", "word")]
    summary = json.loads((tmp_path / "shards" / f"{abx.FOLDER_SPLIT}.prepare.json").read_text())
    assert summary["skipped"] == {"empty": 1, "unreadable": 1, "too_short": 1}
    assert summary["resampled"] == 1 and summary["downmixed"] == 1 and summary["written"] == 3
    src = ShardSource(out, abx.FOLDER_SPLIT)
    stereo = src[[m["id"] for m in manifest].index("bob/yes.wav")]["audio"]
    assert stereo.ndim == 1 and abs(stereo.shape[0] - 0.3 * 16_000) <= 2
    assert len(abx.word_items(manifest)) == 3


def test_folder_dataset_clear_errors(tmp_path):
    abx_fakes.write_tone(str(tmp_path / "one" / "ann" / "yes.wav"), 300)
    with pytest.raises(ValueError, match=">= 2 speakers"):
        abx.folder_dataset(str(tmp_path / "one"), str(tmp_path / "out1"))
    abx_fakes.write_tone(str(tmp_path / "two" / "ann" / "yes.wav"), 300)
    abx_fakes.write_tone(str(tmp_path / "two" / "bob" / "no.wav"), 300)
    with pytest.raises(ValueError, match="no word is spoken by 2 speakers"):
        abx.folder_dataset(str(tmp_path / "two"), str(tmp_path / "out2"))
    with pytest.raises(FileNotFoundError):
        abx.folder_dataset(str(tmp_path / "missing"), str(tmp_path / "out3"))
    assert not os.path.exists(tmp_path / "out2" / "index.json")


def test_word_abx_end_to_end_on_a_folder(tmp_path):
    abx_fakes.write_word_folder(str(tmp_path / "words"))
    out = abx.folder_dataset(str(tmp_path / "words"), str(tmp_path / "shards"))
    src = ShardSource(out, abx.FOLDER_SPLIT)
    items = abx.word_items(src.manifest)
    feats = [abx_fakes.spectrum_features(src[i]["audio"], seed=i) for i in range(len(src))]
    res = abx.evaluate_abx(feats, 50.0, items, max_triplets=1000, seed=0, log=lambda s: None)
    assert res.num_possible == res.triplets.shape[0] == 2 * 3 * 3 * 2 * 2  # all of them
    assert res.layer == 1 and res.error < 0.1 and res.layer_errors[0] > 0.2
