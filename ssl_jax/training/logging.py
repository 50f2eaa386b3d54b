"""Metrics out: TensorBoard scalars (tensorboard's own writer, no TensorFlow) and `metrics.jsonl`."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from tensorboard.summary import Writer


class MetricLogger:
    """Writes one JSON object per logged step to `workdir/metrics.jsonl` and TensorBoard scalars.

    On resume, lines at or after the resumed step are dropped so the file continues the
    uninterrupted run's log.
    """

    def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._writer = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if os.path.exists(self.path):
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
        self._writer = Writer(os.path.join(workdir, "tensorboard"))

    def log(self, step: int, metrics: dict[str, Any], prefix: str = "") -> dict:
        """Logs scalars; returns the record written."""
        rec = {"step": int(step)}
        for k, v in metrics.items():
            v = float(v)
            rec[prefix + k] = v if math.isfinite(v) else None
        if not self.enabled:
            return rec
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        for k, v in rec.items():
            if k != "step" and v is not None:
                self._writer.add_scalar(k, v, step=int(step))
        return rec

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(workdir: str) -> list[dict]:
    """The records of `workdir/metrics.jsonl`."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
