"""MetricLogger: the one writer of metrics.jsonl and TensorBoard scalars (training, fine-tuning,
evaluation)."""

import json
import os

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssl_jax.training.logging import MetricLogger, read_metrics


def _scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(logdir)
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_strict_json_resume_and_tensorboard(tmp_path):
    log = MetricLogger(str(tmp_path))
    for step in (1, 2, 3):
        log.log(step, {"loss": 2.0 ** -step, "frozen": step < 2, "bad": float("nan")})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a line cut short by a kill
    lines = open(tmp_path / "metrics.jsonl").read().splitlines()
    assert all("NaN" not in line for line in lines)  # strict JSON: NaN is written as null
    MetricLogger(str(tmp_path), resume_step=2).close()  # a resume from step 2
    recs = read_metrics(str(tmp_path))
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0] == {"step": 1, "loss": 0.5, "frozen": True, "bad": None} and recs[1]["frozen"] is False
    scalars = _scalars(str(tmp_path / "tensorboard"))
    assert scalars["loss"] == [(1, 0.5), (2, 0.25), (3, 0.125)] and "bad" not in scalars


def test_scalars_only(tmp_path):
    log = MetricLogger(str(tmp_path), tensorboard="tb", jsonl=False)
    log.scalar("ks/valid_acc", 0.5, 10)
    log.scalar("ks/valid_acc", float("inf"), 20)
    log.close()
    assert not os.path.exists(tmp_path / "metrics.jsonl")
    assert _scalars(str(tmp_path / "tb")) == {"ks/valid_acc": [(10, 0.5)]}
