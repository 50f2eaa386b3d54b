"""Tests for ssl_jax/kmeans.py and ssl_jax/cluster.py: parity with scikit-learn's
MiniBatchKMeans, the HuBERT cluster-quality measures, codebook files, the command."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import cluster, kmeans
from ssl_jax.models.encoder import EncoderConfig, frame_lengths
from tests.helpers import ROOT


def _hubert_tiny(corpus):
    from ssl_jax.training.config_check import load_config_file

    c = load_config_file(os.path.join(ROOT, "configs", "hubert_tiny.py"))
    c.data.path = corpus
    c.data.max_seconds = 2.0
    c.data.min_seconds = 0.5
    c.data.num_buckets = 1
    c.objective.targets.num_clusters = (20,)
    c.objective.targets.kmeans.update(steps=6, points_per_step=1024, seed_points=2048)
    return c


@pytest.fixture(scope="module")
def mfcc_points(tiny_corpus):
    cfg = _hubert_tiny(tiny_corpus)
    pts, have = [], 0
    for p in cluster._points(cfg, tiny_corpus, cluster.feature_fn(cfg)):
        pts.append(p)
        have += len(p)
        if have >= 8000:
            break
    x = np.concatenate(pts)[:8000]
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


def test_inertia_within_two_percent_of_scikit_learn(mfcc_points):
    from sklearn.cluster import MiniBatchKMeans

    z, k, size = mfcc_points, 50, 1024
    inertia = lambda c: float(np.mean(np.asarray(kmeans.assign(jnp.asarray(z), jnp.asarray(c))[1])))  # noqa: E731
    for seed in (0, 1):
        ref = MiniBatchKMeans(k, batch_size=size, random_state=seed, max_iter=5, n_init=1).fit(z)
        rng = np.random.default_rng(seed)
        batches = ((z[rng.permutation(len(z))[:size]], np.ones(size, np.float32)) for _ in range(10**6))
        ours = kmeans.fit(batches, k, seed=seed, init_points=z[rng.permutation(len(z))[: 3 * size]],
                          max_steps=5 * len(z) // size)
        a, b = inertia(ours.centers), inertia(ref.cluster_centers_)
        assert abs(a - b) / b < 0.02, (seed, a, b)


def test_padding_points_have_no_weight():
    x = np.concatenate([np.zeros((50, 2)), np.full((50, 2), 10.0)]).astype(np.float32)
    pad = np.full((28, 2), -1000.0, np.float32)
    xs, w = np.concatenate([x, pad]), np.concatenate([np.ones(100), np.zeros(28)]).astype(np.float32)
    res = kmeans.fit([(xs, w)] * 3, 2, init_points=x, reassignment_ratio=0.0)
    np.testing.assert_allclose(sorted(res.centers[:, 0]), [0.0, 10.0], atol=1e-5)


def test_quality_measures():
    perfect = np.diag([30, 50, 20])
    q = kmeans.quality(perfect)
    assert q.phone_purity == q.cluster_purity == pytest.approx(1.0) and q.pnmi == pytest.approx(1.0)
    independent = np.outer([0.5, 0.5], [0.25, 0.25, 0.25, 0.25]) * 400
    assert kmeans.quality(independent).pnmi == pytest.approx(0.0, abs=1e-9)
    merged = np.array([[10, 0], [10, 0], [0, 20]])  # two phones share a cluster
    q = kmeans.quality(merged)
    assert q.phone_purity == pytest.approx(0.75) and q.cluster_purity == pytest.approx(1.0) and 0 < q.pnmi < 1


def test_codebook_file_round_trip_and_bad_file(tmp_path):
    books = kmeans.Codebooks(np.zeros(3, np.float32), np.ones(3, np.float32),
                             [np.eye(3, dtype=np.float32), np.ones((2, 3), np.float32)], {"source": "mfcc"})
    back = kmeans.Codebooks.load(books.save(str(tmp_path / "k.npz")))
    assert back.sizes == (3, 2) and back.meta == {"source": "mfcc"}
    np.save(tmp_path / "junk.npy", np.zeros(2))
    with pytest.raises(ValueError, match="cannot read k-means codebooks"):
        kmeans.Codebooks.load(str(tmp_path / "junk.npy"))


def test_cluster_command_writes_codebooks_and_phone_measures(tiny_corpus, tmp_path):
    out = tmp_path / "km"
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_jax.cluster", "--config=configs/hubert_tiny.py", f"--workdir={out}",
         f"--config.data.path={tiny_corpus}", "--config.data.max_seconds=2.0", "--config.data.min_seconds=0.5",
         "--config.data.num_buckets=1", "--config.objective.targets.num_clusters=(20,)",
         "--config.objective.targets.kmeans.steps=6", "--config.objective.targets.kmeans.points_per_step=1024",
         "--config.objective.targets.kmeans.seed_points=2048"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PNMI" in proc.stdout
    report = json.load(open(out / "cluster.json"))
    q = report["quality"][0]
    assert 0.0 < q["pnmi"] < 1.0 and q["phones"] > 10 and q["clusters_used"] > 10
    assert kmeans.Codebooks.load(str(out / "kmeans.npz")).sizes == (20,)
    co = np.load(out / "cooccurrence.npz")  # the counts behind the reported figures
    assert co["counts_0"].shape == (len(co["phones"]), 20) and co["counts_0"].sum() == q["frames"]
    assert kmeans.quality(co["counts_0"]).pnmi == pytest.approx(q["pnmi"])
    lines = open(out / "valid.km").read().split("\n")[:-1]
    manifest = [json.loads(x) for x in open(os.path.join(tiny_corpus, "valid.jsonl"))]
    assert len(lines) == len(manifest)
    enc = EncoderConfig.from_config(_hubert_tiny(tiny_corpus).model)
    for line, entry in zip(lines, manifest):  # one id per encoder frame of the (cut) utterance
        n = int(frame_lengths(enc, np.asarray([min(entry["num_samples"], 32000)]))[0])
        ids = [int(v) for v in line.split()]
        assert len(ids) == n and all(0 <= v < 20 for v in ids)
