"""`python -m ssl_jax.bench` at tiny size: the JSON it prints, and the wav2vec 2.0 objective against
transformers' `Wav2Vec2ForPreTraining` on the same weights, masks and distractors."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_json_and_loss_parity_with_transformers():
    cmd = [
        sys.executable, "-m", "ssl_jax.bench", f"--config={ROOT}/configs/w2v2_tiny.py",
        "--config.model.frontend=conv",  # transformers has no log-mel front end
        "--compare=torch", "--batch=2", "--seconds=1", "--steps=2", "--matmul_size=256", "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert r["backend"] == "cpu" and r["peak_source"].startswith("measured float32 matmul peak")
    assert r["peak_flops"] > 1e8
    for impl in ("jax", "torch"):
        for prog in ("fwd_bwd", "train_step"):
            x = r[impl][prog]
            assert len(x["rounds"]) == 2 and x["min"] <= x["median"] <= x["max"]
            assert 0 < x["mfu"] < 1.5 and x["audio_seconds_per_second"] > 0
    # The train step does the forward+backward pass and the update: more FLOPs, more arguments
    # (optimizer moments), as XLA counts them.
    fb, ts = r["jax"]["fwd_bwd"], r["jax"]["train_step"]
    assert ts["flops"] > fb["flops"] > 0 and ts["argument_bytes"] > 2 * fb["argument_bytes"]
    assert r["jax"]["num_params"] == r["torch"]["num_params"]
    for prog in ("fwd_bwd", "train_step"):
        assert len(r[f"speedup_vs_torch_{prog}"]["rounds"]) == 2
    # Same objective: with both quantizers picking argmax codes, the per-masked-frame contrastive
    # loss and the diversity term agree with the reference.
    lp = r["loss_parity"]
    assert lp["contrastive"]["ssl_jax"] > 1.0 and 0 < lp["diversity"]["ssl_jax"] < 1
    assert lp["max_relative_difference"] < 1e-4, lp
