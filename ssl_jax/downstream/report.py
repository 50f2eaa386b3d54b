"""Evaluation outputs: SUPERB-style tables with intervals, comparisons of upstreams, plots."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np


def _pct(v: float) -> str:
    return f"{100.0 * v:.2f}"


def format_table(upstream: str, rows: Sequence[tuple[str, str, float, tuple[float, float], bool, str]]) -> str:
    """SUPERB-style table: one row per task metric (title, metric, value, 95% interval,
    lower-is-better, test size)."""
    lines = [f"SUPERB-style results, upstream: {upstream}",
             f"{'task':<36} {'metric':<16} {'value':>7}  {'95% interval':<17} test size",
             "-" * 96]
    for title, metric, value, (lo, hi), lower, size in rows:
        lines.append(f"{title:<36} {metric + (' v' if lower else ' ^'):<16} {_pct(value):>6}%  "
                     f"[{_pct(lo)}, {_pct(hi)}]{'':<2} {size}")
    lines.append("(values in %; v: lower is better, ^: higher is better; intervals: bootstrap over test items)")
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


def plot_curves(curves: Mapping[str, list[dict]], metric: Mapping[str, str], best: Mapping[str, int],
                path: str, title: str) -> None:
    """Validation metric (the one that selects the head) against training step, one panel per
    task; the selected step is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(curves))
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 2.6), squeeze=False)
    for ax, (task, curve) in zip(axes[0], curves.items()):
        steps = [c["step"] for c in curve]
        values = [100.0 * c["valid"][metric[task]] for c in curve]
        ax.plot(steps, values, marker=".", color="tab:blue")
        if best.get(task) in steps:
            k = steps.index(best[task])
            ax.plot([steps[k]], [values[k]], "o", color="tab:red")
        ax.set_title(f"{task} valid {metric[task]} (%)")
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_abx_layers(abx: Mapping[str, Mapping], path: str, title: str) -> None:
    """ABX error of every hidden state (dev and test halves), one panel per ABX variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(abx))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 2.6), squeeze=False)
    for ax, (kind, d) in zip(axes[0], abx.items()):
        layers = np.arange(len(d["layer_errors"]))
        for key, style in (("dev_errors", "--"), ("test_errors", "-")):
            ax.plot(layers, 100.0 * np.asarray(d[key]), style, marker=".", label=key.split("_")[0])
        ax.axvline(d["layer"], color="gray", lw=0.8, ls=":")
        ax.set_title(f"{kind} ABX error (%)")
        ax.set_xlabel("layer")
        ax.set_xticks(layers)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def comparison_rows(cfg, names: Sequence[str], runs: Mapping[str, dict], seed: int = 0) -> list[dict]:
    """One row per (task, metric): each upstream's value, interval and paired comparison with the first."""
    from ssl_jax.downstream import stats, tasks

    rows = []
    base = names[0]
    for tname in cfg.tasks_to_run:
        task = tasks.get(tname)
        for metric in runs[base]["results"][tname]:
            if metric.endswith("_ci"):
                continue
            lower = task.lower_is_better_for(metric)
            row = {"task": tname, "metric": metric, "lower_is_better": lower, "cells": {}}
            base_units = runs[base]["units"][tname][metric]
            for name in names:
                res = runs[name]["results"][tname]
                cell = {"value": res[metric], "ci": res[f"{metric}_ci"]}
                if name != base:
                    c = stats.compare(base_units, runs[name]["units"][tname][metric], lower, seed=seed)
                    cell.update(delta=c.delta, p_value=c.p_value, better=c.better)
                row["cells"][name] = cell
            rows.append(row)
    return rows


def write_comparison(workdir: str, cfg, names: Sequence[str], runs: Mapping[str, dict]) -> str:
    """Writes comparison.json, comparison.md and comparison.png; returns the markdown table."""
    rows = comparison_rows(cfg, names, runs, seed=cfg.seed)
    with open(os.path.join(workdir, "comparison.json"), "w") as f:
        json.dump({"upstreams": list(names), "rows": rows}, f, indent=1)
    marks = {1: " ▲", -1: " ▼", 0: ""}
    lines = ["| task | metric | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for row in rows:
        cells = []
        for name in names:
            c = row["cells"][name]
            cells.append(f"{_pct(c['value'])} [{_pct(c['ci'][0])}, {_pct(c['ci'][1])}]{marks[c.get('better', 0)]}")
        arrow = "↓" if row["lower_is_better"] else "↑"
        lines.append(f"| {row['task']} | {row['metric']} {arrow} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    note = (f"\nValues in % with 95% bootstrap intervals over test items. ▲/▼: significantly better/worse "
            f"than {names[0]} (paired bootstrap over the same test items, p < 0.05).\n")
    with open(os.path.join(workdir, "comparison.md"), "w") as f:
        f.write(table + "\n" + note)
    _plot_comparison(rows, names, os.path.join(workdir, "comparison.png"))
    return table + note


def _plot_comparison(rows: list[dict], names: Sequence[str], path: str) -> None:
    """The comparison table as a picture: green cells are significantly better than the first
    upstream, red ones significantly worse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text, colours = [], []
    for row in rows:
        line, col = [], []
        for name in names:
            c = row["cells"][name]
            line.append(f"{_pct(c['value'])}\n[{_pct(c['ci'][0])}, {_pct(c['ci'][1])}]")
            col.append({1: "#c7e9c0", -1: "#fcbba1", 0: "white"}[c.get("better", 0)])
        text.append(line)
        colours.append(col)
    labels = [f"{r['task']} {r['metric']} {'↓' if r['lower_is_better'] else '↑'}" for r in rows]
    fig, ax = plt.subplots(figsize=(1.8 + 1.9 * len(names), 0.55 * len(rows) + 1.0))
    ax.axis("off")
    table = ax.table(cellText=text, cellColours=colours, rowLabels=labels, colLabels=list(names),
                     loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 2.2)
    ax.set_title(f"% with 95% bootstrap intervals; green/red: better/worse than {names[0]} (p < 0.05)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
