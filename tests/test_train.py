"""Tests for `python -m ssl_jax.train` (ssl_jax/train.py and the loop it runs)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from ssl_jax.training import loop
from ssl_jax.training.checkpoint import load_state
from ssl_jax.training.logging import read_metrics
from tests.helpers import ROOT, tiny_config


def _config(corpus: str, objective: str = ""):
    c = tiny_config()
    if objective:
        from tests.helpers import d2v_config

        c.objective = d2v_config(objective).objective
        c.model.frontend = "logmel"  # the resume concerns the train state; log-mel compiles faster
    c.data.path = corpus
    c.data.max_seconds = 1.0
    c.data.min_seconds = 0.5
    c.data.num_buckets = 1
    c.train.steps = 6
    c.train.batch_size = 8
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.eval_batches = 1
    c.train.checkpoint_every = 3
    c.mesh.data = 2
    c.mesh.fsdp = -1
    return c


def test_stopped_and_resumed_run_matches_uninterrupted(tiny_corpus, tiny_eval_corpus, tmp_path):
    """With data2vec 2.0, whose EMA teacher in the objective state makes every loss depend on
    the whole history: a resumed run matches only if the teacher is restored exactly."""
    cfg = _config(tiny_corpus, "data2vec2")
    cfg.train.abx_probe.update(dict(speakers=2, triplets=200, path=tiny_eval_corpus))
    cfg.train.compilation_cache = str(tmp_path / "xla")
    full = loop.train(cfg, str(tmp_path / "full"), progress=False)
    assert full["steps"] == 6 and full["train_compiles"] == 1 and full["skipped_updates"] == 0
    assert full["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    # Train and eval steps compiled at start-up (none mid-run), each written to the cache.
    assert full["compiles"] == 2 and full["late_compiles"] == 0
    assert full["compilation_cache"]["hits"] == 0 and full["compilation_cache"]["writes"] == 2
    assert all(p["flops"] > 0 and p["argument_bytes"] > 0 for p in full["programs"].values())

    cfg.train.eval_batches = 0  # evaluation is checked on the full run; skip its compile here
    cfg.train.abx_probe.speakers = 0
    part = loop.train(cfg, str(tmp_path / "split"), stop_after=4, progress=False)
    assert part["stopped_early"] and part["steps"] == 4
    assert sorted(int(d) for d in os.listdir(tmp_path / "split" / "checkpoints")) == [3, 4]
    resumed = loop.train(cfg, str(tmp_path / "split"), progress=False)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    # Every program of the resumed run comes from the persistent cache.
    assert resumed["compiles"] == 1 and resumed["compilation_cache"]["hits"] == 1 and resumed["late_compiles"] == 0

    def losses(name):  # (step, loss) in file order: a resume must not repeat or drop a step
        return [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path / name)) if "loss" in r]

    a, b = losses("full"), losses("split")
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in b], [v for _, v in a], rtol=1e-6)
    # The final train states (parameters, optimizer moments and count, EMA teacher) agree too.
    (sa, _), (sb, _) = load_state(str(tmp_path / "full")), load_state(str(tmp_path / "split"))
    assert jax.tree.structure(sa) == jax.tree.structure(sb) and int(sa["step"]) == 6
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), sa, sb)
    rec = read_metrics(str(tmp_path / "full"))[-1]
    assert {"eval_target_std", "eval_pred_std", "eval_loss", "eval_abx_word", "eval_abx_word_l2"} <= set(rec)
    assert 0.0 <= rec["eval_abx_word"] <= 1.0
    summary = json.load(open(tmp_path / "full" / "summary.json"))
    assert summary["eval_end"]["step"] == 6
    assert os.listdir(tmp_path / "full" / "tensorboard")



def test_misspelled_config_key_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_jax.train", "--config=configs/w2v2_tiny.py", f"--workdir={tmp_path}", "--config.train.stepz=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "'train.stepz'" in proc.stderr and "'steps'" in proc.stderr and "'batch_size'" in proc.stderr
