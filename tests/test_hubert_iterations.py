"""HuBERT's two iterations end to end at tiny size: iteration 1 fits its MFCC k-means when the
run starts (cached beside the corpus), iteration 2 clusters a layer of the iteration-1
checkpoint and trains on targets from that frozen encoder, stopping and resuming exactly."""

import os

import numpy as np

from ssl_jax import cluster, kmeans
from ssl_jax.training import loop
from ssl_jax.training.logging import read_metrics
from tests.objectives.test_hubert import hubert_config


def _config(corpus, iteration=1, checkpoint=""):
    c = hubert_config(clusters=(12,))
    c.data.path = corpus
    c.data.max_seconds = 1.0
    c.data.min_seconds = 0.5
    c.data.num_buckets = 1
    c.train.steps = 3
    c.train.batch_size = 8
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.eval_batches = 1
    c.train.checkpoint_every = 10
    c.mesh.data = 2
    c.mesh.fsdp = -1
    t = c.objective.targets
    t.kmeans.update(steps=4, points_per_step=512, seed_points=1024)
    if iteration == 2:
        t.source, t.checkpoint, t.layer = "layer", checkpoint, 1
    return c


def test_two_iterations_with_fitted_targets_and_exact_resume(tiny_corpus, tmp_path):
    it1 = loop.train(_config(tiny_corpus), str(tmp_path / "it1"), progress=False)
    assert it1["steps"] == 3 and it1["skipped_updates"] == 0
    cached = os.listdir(os.path.join(tiny_corpus, "kmeans"))
    cached = [n for n in cached if n.startswith("mfcc-k12-")]
    assert len(cached) == 1

    cfg2 = _config(tiny_corpus, 2, str(tmp_path / "it1"))
    books = cluster.fit_codebooks(cfg2, tiny_corpus)
    assert books.meta["source"] == "layer" and books.sizes == (12,)
    (q,) = cluster.measure(cfg2, books, tiny_corpus, "valid", max_utterances=20)
    assert 0.0 < q.pnmi < 1.0 and q.frames > 100

    full = loop.train(cfg2, str(tmp_path / "it2_full"), progress=False)
    part = loop.train(cfg2, str(tmp_path / "it2_split"), stop_after=2, progress=False)
    assert part["stopped_early"]
    loop.train(cfg2, str(tmp_path / "it2_split"), progress=False)
    losses = lambda name: [r["loss"] for r in read_metrics(str(tmp_path / name)) if "loss" in r]  # noqa: E731
    np.testing.assert_allclose(losses("it2_split"), losses("it2_full"), rtol=1e-6)
    assert full["summary_metrics"]["accuracy"] == "masked-prediction accuracy"
    assert isinstance(kmeans.Codebooks.load(os.path.join(tiny_corpus, "kmeans", cached[0])), kmeans.Codebooks)
