"""Metrics out: TensorBoard scalars (tensorboard's own writer, no TensorFlow) and `metrics.jsonl`."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np


class MetricLogger:
    """Writes one JSON object per logged step to `workdir/metrics.jsonl` and TensorBoard scalars
    under `workdir/<tensorboard>`; `scalar` writes a TensorBoard scalar alone.

    On resume, lines at or after the resumed step are dropped so the file continues the
    uninterrupted run's log (a fresh run, `resume_step` 0, starts an empty file). With
    `jsonl=False` only TensorBoard events are written (evaluation's per-task curves).
    Non-finite values are written as JSON null (strict JSON has no NaN); booleans stay booleans.
    """

    def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True,
                 tensorboard: str = "tensorboard", jsonl: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl") if jsonl else None
        self._writer = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if self.path is not None and os.path.exists(self.path):
            kept = []
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a kill
                    if int(rec.get("step", 0)) <= resume_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(kept)
        self._writer = _ScalarEvents(os.path.join(workdir, tensorboard))

    def log(self, step: int, metrics: dict[str, Any], prefix: str = "") -> dict:
        """Logs scalars; returns the record written."""
        rec: dict[str, Any] = {"step": int(step)}
        for k, v in metrics.items():
            if isinstance(v, (bool, np.bool_)):
                rec[prefix + k] = bool(v)
                continue
            v = float(v)
            rec[prefix + k] = v if math.isfinite(v) else None
        if not self.enabled:
            return rec
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, allow_nan=False) + "\n")
        for k, v in rec.items():
            if k != "step" and v is not None:
                self._writer.add_scalar(k, float(v), step=int(step))
        return rec

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One TensorBoard scalar, no JSON line (non-finite values are left out)."""
        if self.enabled and math.isfinite(float(value)):
            self._writer.add_scalar(tag, float(value), step=int(step))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _ScalarEvents:
    """TensorBoard scalar events (`simple_value`, which every TensorBoard reader takes) through
    tensorboard's own event writer: no TensorFlow."""

    def __init__(self, logdir: str):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        os.makedirs(logdir, exist_ok=True)
        self._writer = EventFileWriter(logdir)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of `workdir/metrics.jsonl`."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
