"""Evaluation outputs: the SUPERB-style table, the layer-weight plot and TensorBoard scalars."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import numpy as np


class ScalarWriter:
    """Writes TensorBoard scalar events (tensorboard's own event writer; no TensorFlow)."""

    def __init__(self, logdir: str):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        os.makedirs(logdir, exist_ok=True)
        self._writer = EventFileWriter(logdir)

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


def format_table(upstream: str, rows: Sequence[tuple[str, str, float, bool, str]]) -> str:
    """SUPERB-style table: one row per task (title, metric, value, lower-is-better, test size)."""
    lines = [f"SUPERB-style results, upstream: {upstream}",
             f"{'task':<34} {'metric':<7} {'value':>8}  test size",
             "-" * 62]
    for title, metric, value, lower, size in rows:
        pct = 100.0 * value
        lines.append(f"{title:<34} {metric + (' v' if lower else ' ^'):<7} {pct:>7.2f}%  {size}")
    lines.append("(v: lower is better, ^: higher is better)")
    return "\n".join(lines)


def plot_layer_weights(weights: Mapping[str, np.ndarray], path: str, title: str) -> None:
    """Bar chart of the learned softmax layer weights, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(weights))
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.6), squeeze=False, sharey=True)
    for ax, (task, w) in zip(axes[0], weights.items()):
        ax.bar(np.arange(len(w)), w, color="tab:blue")
        ax.axhline(1.0 / len(w), color="gray", lw=0.8, ls="--")
        ax.set_title(task)
        ax.set_xlabel("layer")
        ax.set_xticks(np.arange(len(w)))
    axes[0][0].set_ylabel("softmax weight")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
