"""HuBERT's two iterations end to end at tiny size: iteration 1 fits its MFCC k-means when the
run starts (cached beside the corpus); iteration 2 clusters a layer of the iteration-1
checkpoint, warm-starts from it (`train.init_from`) and trains on targets from that frozen
encoder, held in the objective state and saved with the checkpoint (that a resumed run restores
the objective state exactly is tested in tests/test_train.py)."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from ssl_jax import cluster
from ssl_jax.training import loop
from ssl_jax.training.checkpoint import load_pretrained, resolve_step_dir
from ssl_jax.training.logging import read_metrics
from tests.helpers import hubert_config


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
    c.train.eval_batches = 0
    c.train.checkpoint_every = 10
    c.mesh.data = 2
    c.mesh.fsdp = -1
    t = c.objective.targets
    t.kmeans.update(steps=4, points_per_step=512, seed_points=1024)
    if iteration == 2:
        t.source, t.checkpoint, t.layer = "layer", checkpoint, 1
        c.train.init_from = checkpoint
    return c


def test_two_iterations_fitted_targets_warm_start_and_saved_teacher(tiny_corpus, tmp_path):
    it1 = loop.train(_config(tiny_corpus), str(tmp_path / "it1"), progress=False)
    assert it1["steps"] == 3 and it1["skipped_updates"] == 0
    assert it1["summary_metrics"]["accuracy"] == "masked-prediction accuracy"
    assert [n for n in os.listdir(os.path.join(tiny_corpus, "kmeans")) if n.startswith("mfcc-k12-")]

    cfg2 = _config(tiny_corpus, 2, str(tmp_path / "it1"))
    books = cluster.fit_codebooks(cfg2, tiny_corpus)
    assert books.meta["source"] == "layer" and books.sizes == (12,)
    (q,) = cluster.measure(cfg2, books, tiny_corpus, "valid", max_utterances=20)
    assert 0.0 < q.pnmi < 1.0 and q.frames > 100

    it2 = loop.train(cfg2, str(tmp_path / "it2"), progress=False)
    assert it2["init_from"] == str(tmp_path / "it1") and it2["steps"] == 3

    # Warm start: step 1 starts from iteration 1's final parameters.
    params1, _ = load_pretrained(str(tmp_path / "it1"))
    norm = float(np.sqrt(sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(params1))))
    records = [r for r in read_metrics(str(tmp_path / "it2")) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in records)
    np.testing.assert_allclose(records[0]["param_norm"], norm, rtol=1e-5)
    # The frozen teacher went into the checkpoint with the state and came back unchanged.
    state_dir = os.path.join(resolve_step_dir(str(tmp_path / "it2")), "state")
    with ocp.PyTreeCheckpointer() as ckpt:
        saved = ckpt.restore(state_dir)
    jax.tree.map(np.testing.assert_array_equal, saved["objective_state"]["teacher"], params1["encoder"])
