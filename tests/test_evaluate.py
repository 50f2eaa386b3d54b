"""End to end: `python -m ssl_jax.evaluate` with FBANK on the shared tiny corpus (smoke variant)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fbank_run(tiny_corpus, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("eval_fbank"))
    cmd = [sys.executable, "-m", "ssl_jax.evaluate", "--config=configs/eval/superb_tiny.py:smoke",
           "--upstream=fbank", f"--workdir={workdir}", f"--config.data.path={tiny_corpus}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir, proc.stdout


def test_results_json_has_every_task_and_metric(fbank_run):
    workdir, _ = fbank_run
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    expected = {"pr": "per", "ks": "acc", "sid": "acc", "ic": "acc", "er": "acc", "asr": "wer", "asv": "eer"}
    assert set(results) == set(expected)
    for task, metric in expected.items():
        value = results[task][metric]
        assert 0.0 <= value <= (2.0 if metric in ("per", "wer") else 1.0), (task, value)


def test_table_plot_tensorboard_and_details(fbank_run):
    workdir, stdout = fbank_run
    assert "SUPERB-style results, upstream: fbank" in stdout
    assert "prosody classes" in stdout
    with open(os.path.join(workdir, "layer_weights.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    events = os.listdir(os.path.join(workdir, "tb"))
    assert any(e.startswith("events.out.tfevents") for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(workdir, "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"ks/valid_acc", "pr/train_loss", "asv/valid_eer", "asr/test_wer"} <= tags
    with open(os.path.join(workdir, "details.json")) as f:
        details = json.load(f)
    # FBANK is one "layer": its softmax weight is exactly 1.
    assert details["tasks"]["ks"]["layer_weights"] == [1.0]
    assert details["tasks"]["asv"]["test_speakers"] >= 2
    assert details["tasks"]["asr"]["stack"] == 2


def test_unknown_task_and_bad_upstream_are_clear_errors(tmp_path):
    cmd = [sys.executable, "-m", "ssl_jax.evaluate", "--config=configs/eval/superb_tiny.py",
           "--upstream=/nonexistent/ckpt", f"--workdir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no such checkpoint path" in proc.stderr
    proc = subprocess.run(cmd[:4] + ["--upstream=fbank", f"--workdir={tmp_path}", "--config.tasks_to_run=('xx',)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown task 'xx'" in proc.stderr
    proc = subprocess.run(cmd[:4] + ["--upstream=fbank", f"--workdir={tmp_path}", "--config.tasks.ks.lrr=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "valid fields" in proc.stderr and "'lr'" in proc.stderr
