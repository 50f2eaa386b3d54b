"""SUPERB-style downstream evaluation of a frozen upstream (Yang et al., 2021).

  python -m ssl_jax.evaluate --config=configs/eval/superb_tiny.py --upstream=fbank --workdir=/tmp/eval_fbank

Extracts every hidden state of the upstream once per split, trains the light heads of
`ssl_jax.downstream` on a softmax-weighted sum of layers with the config's fixed
hyper-parameters, selects on the valid split and scores the test split. Writes
`WORKDIR/results.json` ({task: {metric: value}}), `details.json`, `results.txt` (the table),
`layer_weights.png` and TensorBoard events under `WORKDIR/tb`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ssl_jax.data.shards import ShardSource, read_index
from ssl_jax.downstream import probe, report, tasks, upstreams


def corpus_dir(cfg) -> str:
    """The shard folder of the config's embedded corpus (built once) or `data.path`."""
    if cfg.data.path:
        return cfg.data.path
    from ssl_jax.data import synth

    return synth.ensure_corpus(hours=cfg.data.synth_hours, seed=cfg.data.synth_seed)


def task_dir(cfg, task_cfg, cache_dir: str) -> str:
    """Shard folder of a task: the corpus, or a real dataset converted by its reader."""
    if not task_cfg.data:
        return corpus_dir(cfg)
    from ssl_jax.downstream import readers

    reader, _, path = task_cfg.data.partition(":")
    kwargs = task_cfg.reader_args.to_dict() if "reader_args" in task_cfg else {}
    tag = reader + "".join(f"-{k}={v}" for k, v in sorted(kwargs.items()) if not isinstance(v, dict))
    return readers.prepare(reader, path, os.path.join(cache_dir, tag.replace("/", "_")), **kwargs)


class FeatureCache:
    """Extracted, standardised features per (shard folder, split), computed on first use."""

    def __init__(self, upstream, batch_size: int, log: Callable[[str], None]):
        self.upstream, self.batch_size, self.log = upstream, batch_size, log
        self._raw: dict[tuple[str, str], list[np.ndarray]] = {}
        self._stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._features: dict[tuple[str, str], probe.SplitFeatures] = {}
        self.seconds = 0.0

    def _extract(self, shard_dir: str, split: str) -> list[np.ndarray]:
        if (shard_dir, split) not in self._raw:
            t0 = time.time()
            self._raw[shard_dir, split] = probe.extract(
                self.upstream, ShardSource(shard_dir, split), batch_size=self.batch_size, log=self.log)
            self.seconds += time.time() - t0
        return self._raw[shard_dir, split]

    def get(self, shard_dir: str, split: str, stats_split: str) -> probe.SplitFeatures:
        """Features of `split`, standardised with the statistics of `stats_split`."""
        if shard_dir not in self._stats:
            self._stats[shard_dir] = probe.layer_stats(self._extract(shard_dir, stats_split))
        if (shard_dir, split) not in self._features:
            mean, std = self._stats[shard_dir]
            self._features[shard_dir, split] = probe.normalize(self._extract(shard_dir, split), mean, std)
        return self._features[shard_dir, split]


def task_data(task: tasks.Task, cache: FeatureCache, shard_dir: str, splits) -> dict[str, probe.TaskData]:
    """Selects the task's utterances in its train / valid / test splits."""
    out = {}
    for role, split in zip(("train", "valid", "test"), splits):
        feats = cache.get(shard_dir, split, stats_split=splits[0])
        manifest = ShardSource(shard_dir, split).manifest
        idx = [i for i, m in enumerate(manifest) if task.select(m)]
        if not idx:
            raise ValueError(f"task {task.name}: no utterances of split {split!r} in {shard_dir}")
        trials = None
        if task.family == "verify":
            from ssl_jax.downstream import readers

            trials = readers.read_trials(shard_dir, split, [manifest[i]["id"] for i in idx])
        out[role] = probe.TaskData(features=feats, indices=np.array(idx, np.int64),
                                   targets=[task.target(manifest[i]) for i in idx], trials=trials)
    return out


def run_task(name: str, cfg, cache: FeatureCache, writer: report.ScalarWriter, stack: int,
             cache_dir: str) -> probe.TaskResult:
    task = tasks.get(name)
    tcfg = cfg.tasks[name]
    shard_dir = task_dir(cfg, tcfg, cache_dir)
    splits = tuple(tcfg.splits)
    available = read_index(shard_dir)["splits"]
    missing = [s for s in splits if s not in available]
    if missing:
        raise KeyError(f"task {name}: {shard_dir} lacks splits {missing}; it has {sorted(available)}")
    data = task_data(task, cache, shard_dir, splits)
    seed = cfg.seed
    if task.family == "classify":
        return probe.run_classify(task, data, tcfg, seed, writer.scalar)
    if task.family == "ctc":
        return probe.run_ctc(task, data, tcfg, seed, stack, writer.scalar)
    return probe.run_verify(task, data, tcfg, seed, stack, writer.scalar)


def evaluate(cfg, upstream_spec: str, workdir: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs every task of `cfg.tasks_to_run`; returns {task: {metric: value}}."""
    t_start = time.time()
    os.makedirs(workdir, exist_ok=True)
    for name in cfg.tasks_to_run:
        tasks.get(name)
        if name not in cfg.tasks:
            raise KeyError(f"task {name!r} has no settings under config.tasks ({sorted(cfg.tasks)})")
    upstream = upstreams.load(upstream_spec)
    up_name = getattr(upstream, "name", upstream_spec)
    stack = max(1, int(round(upstream.frame_rate / cfg.target_rate)))
    log(f"upstream {upstream_spec}: {upstream.frame_rate:g} Hz frames, heads read {stack} stacked")
    cache = FeatureCache(upstream, cfg.extract.batch_size, log)
    writer = report.ScalarWriter(os.path.join(workdir, "tb"))
    results: dict[str, dict[str, float]] = {}
    details: dict[str, Any] = {"upstream": upstream_spec, "tasks": {}}
    weights: dict[str, np.ndarray] = {}
    rows = []
    try:
        for name in cfg.tasks_to_run:
            t0 = time.time()
            feat_before = cache.seconds
            res = run_task(name, cfg, cache, writer, stack, os.path.join(workdir, "datasets"))
            task = tasks.get(name)
            results[name] = {k: float(v) for k, v in res.metrics.items()}
            weights[name] = res.layer_weights
            size = f"{res.info['utterances']['test']} utts"
            if "trials" in res.info:
                size += f", {res.info['trials']['test']} trials"
            rows.append((cfg.tasks[name].title, task.metric, results[name][task.metric], task.lower_is_better, size))
            details["tasks"][name] = {
                "test": results[name], "valid": res.fit.valid, "best_step": res.fit.best_step,
                "steps": res.fit.steps, "train_seconds": round(res.fit.seconds, 1),
                "extract_seconds": round(cache.seconds - feat_before, 1),
                "layer_weights": [round(float(w), 4) for w in res.layer_weights], **res.info}
            writer.scalar(f"{name}/test_{task.metric}", results[name][task.metric], res.fit.steps)
            log(f"{name}: test {results[name]} (valid {res.fit.valid}, best step {res.fit.best_step}"
                f"/{res.fit.steps}, {time.time() - t0:.0f}s)")
    finally:
        writer.close()
    details["extract_seconds"] = round(cache.seconds, 1)
    details["total_seconds"] = round(time.time() - t_start, 1)
    table = report.format_table(up_name, rows)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(workdir, "details.json"), "w") as f:
        json.dump(details, f, indent=1)
    with open(os.path.join(workdir, "results.txt"), "w") as f:
        f.write(table + "\n")
    report.plot_layer_weights(weights, os.path.join(workdir, "layer_weights.png"),
                              f"learned layer weights, upstream {up_name}")
    log(table)
    log(f"total {details['total_seconds']:.0f}s (feature extraction {details['extract_seconds']:.0f}s); "
        f"results in {workdir}/results.json")
    return results


if __name__ == "__main__":
    from ssl_jax.training.config_check import run_upstream_command

    run_upstream_command(evaluate, "evaluation suite config (configs/eval/*.py)", "'fbank' or an ssl_jax checkpoint / workdir")
