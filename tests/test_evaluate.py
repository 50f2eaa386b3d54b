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


def test_task_on_a_real_dataset_layout(tmp_path, monkeypatch):
    """A task naming `READER:PATH` goes through the reader, the shard cache and the probe."""
    import numpy as np
    import soundfile as sf

    from ssl_jax import evaluate
    from ssl_jax.downstream import upstreams
    from ssl_jax.training.config_check import load_config_file
    from tests.downstream import fakes

    root = tmp_path / "fluent_speech_commands_dataset"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    header = ",path,speakerId,transcription,action,object,location\n"
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        rows = []
        for k in range(n):
            action = ("activate", "deactivate")[k % 2]
            rel = f"wavs/speakers/s{k % 3}/{split}{k}.wav"
            audio = fakes._tones(["a", "i"] if k % 2 else ["o", "u"], k % 3, rng)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(root / rel), audio, 16000)
            rows.append(f"{k},{rel},s{k % 3},t,{action},lights,none")
        (root / "data" / f"{split}_data.csv").write_text(header + "\n".join(rows) + "\n")
    cfg = load_config_file(os.path.join(ROOT, "configs", "eval", "superb.py"))
    cfg.tasks_to_run = ("ic",)
    cfg.tasks.ic.data = f"fluent_speech_commands:{root}"
    cfg.tasks.ic.update(dict(lr=1e-2, max_steps=60, eval_every=20, batch_size=8))
    monkeypatch.setattr(upstreams, "load", lambda spec: fakes.SpectrumUpstream())
    results = evaluate.evaluate(cfg, "spectrum", str(tmp_path / "out"), log=lambda m: None)
    assert results["ic"]["acc"] >= 0.75
    assert os.path.exists(tmp_path / "out" / "datasets" / "fluent_speech_commands" / "prepare.json")
