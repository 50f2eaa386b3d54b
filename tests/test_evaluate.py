"""End to end: `python -m ssl_jax.evaluate` with FBANK on the shared tiny corpus (smoke variant)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def compare_run(tiny_eval_corpus, tmp_path_factory):
    """FBANK and MFCC, smoke settings, on the tiny evaluation corpus, through the command line."""
    workdir = str(tmp_path_factory.mktemp("eval_cmp"))
    cmd = [sys.executable, "-m", "ssl_jax.evaluate", "--config=configs/eval/superb_tiny.py:smoke",
           "--upstream=fbank,mfcc", f"--workdir={workdir}", f"--config.data.path={tiny_eval_corpus}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir, proc.stdout


EXPECTED = {"pr": "per", "ks": "acc", "sid": "acc", "ic": "acc", "er": "acc", "asr": "wer", "asv": "eer",
            "abx": "word"}


def test_results_json_has_every_task_metric_and_interval(compare_run):
    workdir, _ = compare_run
    for name in ("fbank", "mfcc"):
        with open(os.path.join(workdir, name, "results.json")) as f:
            results = json.load(f)
        assert set(results) == set(EXPECTED)
        for task, metric in EXPECTED.items():
            value, (lo, hi) = results[task][metric], results[task][f"{metric}_ci"]
            # Error rates of a 20-step probe may exceed 1 (insertions); the rest are shares.
            assert 0.0 <= value <= (np.inf if metric in ("per", "wer") else 1.0), (task, value)
            assert lo <= value <= hi, (task, value, lo, hi)
        assert {"acc_action", "acc_object", "acc_location", "acc"} <= set(results["ic"])
        assert {"word", "phone"} <= set(results["abx"])
        # ABX trains nothing, so even at smoke size it measures the features: both front ends tell
        # words and triphones apart across speakers (chance 0.5; measured 0.35 / 0.15 for FBANK,
        # 0.32 / 0.24 for MFCC). The heads' own thresholds are in tests/downstream/test_probe.py.
        assert results["abx"]["word"] < 0.45 and results["abx"]["phone"] < 0.35, results["abx"]


def test_comparison_table_plots_tensorboard_and_details(compare_run):
    workdir, stdout = compare_run
    assert "SUPERB-style results, upstream: fbank" in stdout and "upstream: mfcc" in stdout
    assert "prosody classes" in stdout
    with open(os.path.join(workdir, "comparison.json")) as f:
        comparison = json.load(f)
    assert comparison["upstreams"] == ["fbank", "mfcc"]
    rows = {(r["task"], r["metric"]): r for r in comparison["rows"]}
    assert set(EXPECTED.items()) <= set(rows)
    for row in rows.values():
        cell = row["cells"]["mfcc"]
        assert 0.0 <= cell["p_value"] <= 1.0 and cell["better"] in (-1, 0, 1)
        assert (cell["better"] != 0) <= (cell["p_value"] < 0.05)
    md = open(os.path.join(workdir, "comparison.md")).read()
    assert "| task | metric | fbank | mfcc |" in md and "p < 0.05" in md
    for png in ("comparison.png", "fbank/layer_weights.png", "fbank/curves.png"):
        with open(os.path.join(workdir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(workdir, "fbank", "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    # PR searches a learning-rate grid: each rate's curve has its own tags.
    assert {"ks/valid_acc", "pr/train_loss@lr0.01", "pr/train_loss@lr0.03", "asv/valid_eer", "asr/test_wer"} <= tags
    with open(os.path.join(workdir, "fbank", "details.json")) as f:
        details = json.load(f)
    # FBANK is one "layer": its softmax weight is exactly 1.
    assert details["tasks"]["ks"]["layer_weights"] == [1.0]
    assert details["tasks"]["asv"]["test_speakers"] >= 2
    assert details["tasks"]["asr"]["stack"] == 2
    assert details["tasks"]["pr"]["curve"][-1]["step"] == details["tasks"]["pr"]["steps"]
    pr = details["tasks"]["pr"]
    assert set(pr["lr_grid"]) == {"0.01", "0.03"} and pr["valid"] == pr["lr_grid"][f"{pr['lr']:g}"]
    assert len(details["tasks"]["abx"]["word"]["layer_errors"]) == 1
    assert details["peak_rss_mib"] > 0
    # Features were extracted once per split and upstream, on disk.
    stores = [d for d, _, files in os.walk(os.path.join(workdir, "features")) if "frames.bin" in files]
    assert len(stores) == 2 * 6


def test_a_second_run_reruns_only_what_changed(compare_run, tiny_eval_corpus):
    workdir, _ = compare_run
    with open(os.path.join(workdir, "mfcc", "results.json")) as f:
        before = json.load(f)
    cmd = [sys.executable, "-m", "ssl_jax.evaluate", "--config=configs/eval/superb_tiny.py:smoke",
           "--upstream=fbank,mfcc", f"--workdir={workdir}", f"--config.data.path={tiny_eval_corpus}",
           "--config.tasks.ks.max_steps=30", "--config.tasks_to_run=('ks','sid')"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("reusing the results of ['sid']") == 2
    assert "extracted" not in proc.stdout  # the feature stores are reused too
    with open(os.path.join(workdir, "mfcc", "results.json")) as f:
        after = json.load(f)
    # The tasks outside the run keep their results, details and units (a later run reuses them).
    assert set(after) == set(before) and all(after[t] == before[t] for t in before if t != "ks")
    with open(os.path.join(workdir, "mfcc", "details.json")) as f:
        details = json.load(f)
    assert details["tasks"]["ks"]["steps"] == 30 and set(details["tasks"]) == set(before)
    assert set(np.load(os.path.join(workdir, "mfcc", "units.npz")).files) >= {"pr/per/kind", "asv/eer/kind"}
    assert "ASR" in open(os.path.join(workdir, "mfcc", "results.txt")).read()


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
    monkeypatch.setattr(upstreams, "load", lambda spec, normalize=None: fakes.SpectrumUpstream())
    monkeypatch.setattr(evaluate, "_check_spec", lambda spec: None)
    results = evaluate.evaluate(cfg, "spectrum", str(tmp_path / "out"), log=lambda m: None)
    assert results["ic"]["acc"] >= 0.75
    prepared = [d for d in os.listdir(tmp_path / "out" / "datasets") if d.startswith("fluent_speech_commands-")]
    assert len(prepared) == 1  # named by reader and a hash of the source path
    assert os.path.exists(tmp_path / "out" / "datasets" / prepared[0] / "prepare.json")


def test_word_abx_on_a_folder_of_recordings(tmp_path):
    """`abx` on ROOT/SPEAKER/WORD.wav recordings through the command line."""
    from tests.downstream import abx_fakes

    abx_fakes.write_word_folder(str(tmp_path / "words"), words=8, speakers=3)
    (tmp_path / "words" / "spk0" / "broken.wav").write_bytes(b"not audio")
    cmd = [sys.executable, "-m", "ssl_jax.evaluate", "--config=configs/eval/superb.py", "--upstream=fbank",
           f"--workdir={tmp_path / 'out'}", "--config.tasks_to_run=('abx',)",
           f"--config.tasks.abx.data=folder:{tmp_path / 'words'}", "--config.tasks.abx.max_triplets=500"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(tmp_path / "out" / "results.json") as f:
        results = json.load(f)
    # The words are distinct tone pairs: FBANK tells them apart across speakers.
    assert set(results["abx"]) == {"word", "word_ci"} and results["abx"]["word"] < 0.2
    prepared = [d for d in os.listdir(tmp_path / "out" / "datasets") if d.startswith("folder-")]
    with open(tmp_path / "out" / "datasets" / prepared[0] / "abx_words.prepare.json") as f:
        assert json.load(f)["written"] == 24
