"""SUPERB-style downstream evaluation of frozen upstreams (Yang et al., 2021), with intervals.

  python -m ssl_jax.evaluate --config=configs/eval/superb_tiny.py --upstream=fbank --workdir=/tmp/eval_fbank
  python -m ssl_jax.evaluate --config=configs/eval/superb_tiny.py --upstream=fbank,mfcc,runs/w2v2_tiny --workdir=/tmp/cmp

Extracts every hidden state of each upstream once per split into an on-disk feature store
(reused by every task), trains the light heads of `ssl_jax.downstream` on a softmax-weighted
sum of layers (or one layer, `--config.single_layer=K`) with the config's fixed
hyper-parameters, selects on the valid split and scores the test split; the `abx` task
scores across-speaker ABX discrimination without training. Every test metric gets a 95%
bootstrap interval over test items. Writes, per upstream (into WORKDIR, or WORKDIR/NAME
when several are given): `results.json` ({task: {metric: value, metric_ci: [lo, hi]}}),
`details.json` (validation curves, layer weights, sizes, timings), `units.npz` (per-item
statistics for later comparisons), `results.txt`, `layer_weights.png`, `curves.png` and
TensorBoard events under `tb/`. With several upstreams: `comparison.md`, `comparison.png`
and `comparison.json`, where a cell is marked better or worse than the first upstream only
when a paired bootstrap over the same test items gives p < 0.05.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ssl_jax.data.shards import ShardSource, read_index
from ssl_jax.downstream import probe, report, stats, store, tasks, upstreams
from ssl_jax.training.logging import MetricLogger


def corpus_dir(cfg) -> str:
    """`data.path`, or the embedded evaluation corpus of seed `data.synth_seed` (built once)."""
    if cfg.data.path:
        return cfg.data.path
    from ssl_jax.data import synth

    return synth.ensure_eval_corpus(seed=cfg.data.synth_seed)


def _tag(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def task_dir(cfg, task_cfg, cache_dir: str) -> str:
    """Shard folder of a task: the corpus, or a real dataset converted by its reader.

    A converted dataset is cached under a name holding the reader, its arguments and a hash
    of the source path, so two copies of a dataset never share a cache folder.
    """
    if not task_cfg.data:
        return corpus_dir(cfg)
    reader, _, path = task_cfg.data.partition(":")
    kwargs = task_cfg.reader_args.to_dict() if "reader_args" in task_cfg else {}
    if reader == "folder":  # ROOT/SPEAKER/WORD.wav recordings for word ABX
        from ssl_jax.downstream import abx

        return abx.folder_dataset(path, os.path.join(cache_dir, f"folder-{_tag(os.path.abspath(path))}"))
    from ssl_jax.downstream import readers

    args = "".join(f"-{k}={v}" for k, v in sorted(kwargs.items()) if not isinstance(v, dict))
    name = f"{reader}{args}-{_tag(os.path.abspath(path))}".replace("/", "_")
    return readers.prepare(reader, path, os.path.join(cache_dir, name), **kwargs)


class Features:
    """One upstream's feature stores, one per (shard folder, split), extracted on first use."""

    def __init__(self, upstream, identity: str, root: str, batch_size: int, log: Callable[[str], None]):
        self.upstream, self.identity, self.root, self.log = upstream, identity, root, log
        self.batch_size = batch_size
        self.pooling = str(getattr(upstream, "pooling", "mean"))
        self.pooling_key = {} if self.pooling == "mean" else {"pooling": self.pooling}  # mean stores stay valid
        self._stores: dict[tuple[str, str], store.FeatureStore] = {}
        self.seconds = 0.0

    def get(self, shard_dir: str, split: str) -> store.FeatureStore:
        key = (os.path.abspath(shard_dir), split)
        if key not in self._stores:
            t0 = time.time()
            source = ShardSource(shard_dir, split)
            path = os.path.join(self.root, _tag(key[0]), split)
            # The manifest's digest: recordings replaced in a user's folder give new features.
            digest = _tag(json.dumps([(m.get("id"), m["num_samples"]) for m in source.manifest]))
            self._stores[key] = store.open_or_build(
                path, {"upstream": self.identity, "source": key[0], "split": split, "utterances": len(source),
                       "manifest": digest, **self.pooling_key},
                lambda wavs: self.upstream.embed(wavs, batch_size=self.batch_size, dtype=np.float16),
                lambda i: source[i]["audio"], source.num_samples,
                self.upstream.frame_rate, log=self.log, pooling=self.pooling)
            self.seconds += time.time() - t0
        return self._stores[key]


def task_data(task: tasks.Task, feats: Features, shard_dir: str, splits, layer: int | None) -> dict[str, probe.TaskData]:
    """The task's utterances in its train / valid / test splits, standardised with statistics
    of the task's own training utterances under this upstream."""
    out: dict[str, probe.TaskData] = {}
    mean = std = None
    for role, split in zip(("train", "valid", "test"), splits):
        fs = feats.get(shard_dir, split)
        manifest = ShardSource(shard_dir, split).manifest
        idx = np.array([i for i, m in enumerate(manifest) if task.select(m)], np.int64)
        if not idx.size:
            raise ValueError(f"task {task.name}: no utterances of split {split!r} in {shard_dir}")
        if layer is not None and not 0 <= layer < fs.num_layers:
            raise ValueError(f"single_layer={layer}, but the upstream has {fs.num_layers} hidden states "
                             f"(0..{fs.num_layers - 1})")
        if mean is None:
            mean, std = store.layer_stats(fs, idx)
            if layer is not None:
                mean, std = mean[layer:layer + 1], std[layer:layer + 1]
        trials = None
        if task.family == "verify":
            from ssl_jax.downstream import readers

            trials = readers.read_trials(shard_dir, split, [manifest[i]["id"] for i in idx])
        out[role] = probe.TaskData(store=fs, indices=idx, targets=[task.target(manifest[i]) for i in idx],
                                   mean=mean, std=std, layer=layer, trials=trials)
    return out


def run_task(name: str, cfg, feats: Features, writer: MetricLogger, stack: int, layer: int | None,
             cache_dir: str, log: Callable[[str], None]) -> probe.TaskResult:
    task = tasks.get(name)
    tcfg = cfg.tasks[name]
    shard_dir = task_dir(cfg, tcfg, cache_dir)
    splits = tuple(tcfg.splits)
    available = read_index(shard_dir)["splits"]
    missing = [s for s in splits if s not in available]
    if missing:
        raise KeyError(f"task {name}: {shard_dir} lacks splits {missing}; it has {sorted(available)}")
    if task.family == "abx":
        res = run_abx(tcfg, shard_dir, splits, feats, layer, cfg.seed, log)
    else:
        data = task_data(task, feats, shard_dir, splits, layer)
        if task.family == "classify":
            res = probe.run_classify(task, data, tcfg, cfg.seed, writer.scalar)
        elif task.family == "ctc":
            res = probe.run_ctc(task, data, tcfg, cfg.seed, stack, writer.scalar)
        else:
            res = probe.run_verify(task, data, tcfg, cfg.seed, stack, writer.scalar)
    prepared = os.path.join(shard_dir, "prepare.json")
    if os.path.exists(prepared):  # a converted dataset: what its reader dropped or skipped
        with open(prepared) as f:
            prep = json.load(f)
        res.info["dataset"] = {k: prep.get(k) for k in ("reader", "root", "utterances", "reader_stats", "skipped")}
        for k, v in (prep.get("reader_stats") or {}).items():
            if k.endswith("utterances") and v:
                log(f"  {name}: the {prep.get('reader')} reader dropped {k.replace('_', ' ')}: {v}")
    return res


def run_abx(tcfg, shard_dir: str, splits, feats: Features, layer: int | None, seed: int,
            log: Callable[[str], None]) -> probe.TaskResult:
    """Across-speaker ABX of every split named: isolated words (`task == "word"`) give the
    `word` error, running speech with phone alignments the triphone `phone` error."""
    from ssl_jax.downstream import abx

    t0 = time.time()
    metrics, units, info = {}, {}, {"triplets": {}, "utterances": {}}
    for split in splits:
        manifest = ShardSource(shard_dir, split).manifest
        kind = "word" if any(m.get("task") == "word" for m in manifest) else "phone"
        items = abx.word_items(manifest) if kind == "word" else abx.triphone_items(manifest)
        fs = feats.get(shard_dir, split)
        res = abx.evaluate_abx(lambda u: fs.frames(u, layer), fs.frame_rate, items,
                               max_triplets=tcfg.max_triplets, seed=seed, distance=tcfg.distance, log=log)
        metrics[kind] = res.error
        units[kind] = stats.Ratio(*res.test_unit_sums())
        info[kind] = {k: v for k, v in res.summary().items() if k not in ("error", "interval")}
        info["triplets"][kind] = int(res.is_test.sum())
        info["utterances"][kind] = len(manifest)
    fit = probe.FitResult(params=None, best_step=0, steps=0, valid={}, seconds=time.time() - t0)
    return probe.TaskResult(metrics=metrics, units=units, layer_weights=np.zeros((0,)), fit=fit, info=info)


def upstream_identity(spec: str, normalize: bool | None) -> str:
    """What the features depend on: the spec, and for checkpoints the resolved step folder and its time."""
    ident = spec
    if os.path.exists(spec):
        from ssl_jax.training.checkpoint import resolve_step_dir

        step_dir = resolve_step_dir(spec)
        ident = f"{os.path.abspath(step_dir)}@{os.path.getmtime(step_dir):.0f}"
    return f"{ident}|normalize={normalize}"


def task_keys(cfg, upstream: str) -> dict[str, str]:
    """Per task, a key of everything its result depends on: the upstream, the data and seed
    settings shared by all tasks, and the task's own settings."""
    shared = {k: v for k, v in cfg.to_dict().items() if k not in ("tasks", "tasks_to_run", "extract")}
    return {t: _tag(json.dumps({"upstream": upstream, "shared": shared, "task": cfg.tasks[t].to_dict()},
                               sort_keys=True, default=str))
            for t in cfg.tasks_to_run}


def evaluate_upstream(cfg, spec: str, name: str, workdir: str, shared: str, normalize: bool | None,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """Every task of `cfg.tasks_to_run` on one upstream; writes its outputs into `workdir`.

    `shared` holds what every upstream reuses: converted datasets (`datasets/`) and, unless
    `extract.cache_dir` says otherwise, the feature stores (`features/NAME/`). A task whose
    result in `workdir` was computed with the same upstream and settings is not run again.

    Returns:
        {"results": {task: {metric: value}}, "units": {task: {metric: stats.Metric}}, "details": ...}.
    """
    os.makedirs(workdir, exist_ok=True)
    identity = upstream_identity(spec, normalize)
    keys = task_keys(cfg, identity)
    results, units, done = _load_cached(workdir, keys)
    details: dict[str, Any] = {"upstream": spec, "name": name, "task_keys": keys, "tasks": {}}
    if done:
        log(f"upstream {name}: reusing the results of {sorted(done)} in {workdir} (same upstream and settings)")
    todo = [t for t in cfg.tasks_to_run if t not in done]
    t_start = time.time()
    feats = None
    if todo:
        upstream = upstreams.load(spec, normalize=normalize)
        stack = max(1, int(round(upstream.frame_rate / cfg.target_rate)))
        layer = None if cfg.single_layer < 0 else int(cfg.single_layer)
        pooling = str(getattr(upstream, "pooling", "mean"))  # any object with `embed` and `frame_rate` serves
        details["features"] = {"frame_tasks": f"frame sequence, {upstream.frame_rate:g} Hz",
                               "utterance_tasks": f"{pooling} of each layer's frames"}
        log(f"upstream {name}: {upstream.frame_rate:g} Hz frames, heads read {stack} stacked"
            + (f", layer {layer} only" if layer is not None else "")
            + f"; utterance tasks pool frames by {pooling}")
        cache_root = cfg.extract.cache_dir or os.path.join(shared, "features")
        feats = Features(upstream, identity, os.path.join(cache_root, name), cfg.extract.batch_size, log)
        writer = MetricLogger(workdir, tensorboard="tb", jsonl=False)
        try:
            for tname in todo:
                t0 = time.time()
                feat_before = feats.seconds
                res = run_task(tname, cfg, feats, writer, stack, layer, os.path.join(shared, "datasets"), log)
                units[tname] = res.units
                results[tname] = {}
                for metric, m in res.units.items():
                    lo, hi = stats.interval(m, seed=cfg.seed)
                    results[tname][metric] = float(res.metrics[metric])
                    results[tname][f"{metric}_ci"] = [lo, hi]
                done[tname] = {
                    "test": results[tname], "valid": res.fit.valid, "best_step": res.fit.best_step,
                    "steps": res.fit.steps, "train_seconds": round(res.fit.seconds, 1),
                    "extract_seconds": round(feats.seconds - feat_before, 1),
                    "seconds": round(time.time() - t0, 1),
                    "layer_weights": [round(float(w), 4) for w in res.layer_weights],
                    "curve": res.fit.curve, **res.info}
                if res.fit.grid:  # the learning-rate grid: every rate's best validation metrics
                    done[tname].update(lr=res.fit.lr, lr_grid={f"{lr:g}": v for lr, v in res.fit.grid.items()})
                primary = tasks.get(tname).metric if tasks.get(tname).metric in res.metrics else next(iter(res.metrics))
                writer.scalar(f"{tname}/test_{primary}", results[tname][primary], res.fit.steps)
                lr = f", lr {res.fit.lr:g} of {len(res.fit.grid)}" if res.fit.grid else ""
                log(f"{tname}: test {_brief(results[tname])} (valid {_brief(res.fit.valid)}, best step "
                    f"{res.fit.best_step}/{res.fit.steps}{lr}, {time.time() - t0:.0f}s)")
        finally:
            writer.close()
    details["tasks"] = {t: done[t] for t in cfg.tasks_to_run}
    results = {t: results[t] for t in cfg.tasks_to_run}
    units = {t: units[t] for t in cfg.tasks_to_run}
    details["extract_seconds"] = round(feats.seconds, 1) if feats else 0.0
    details["total_seconds"] = round(time.time() - t_start, 1)
    details["peak_rss_mib"] = round(peak_rss_mib(), 1)
    # The folder keeps the results of tasks outside this run (a run of some tasks adds to it).
    o_results, o_units, o_tasks, o_keys = _other_tasks(workdir, cfg.tasks_to_run)
    _write_upstream(workdir, cfg, name, {**o_results, **results}, {**o_units, **units},
                    {**details, "task_keys": {**o_keys, **keys}, "tasks": {**o_tasks, **details["tasks"]}})
    return {"results": results, "units": units, "details": details}


def _brief(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.endswith("_ci"))


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _write_upstream(workdir: str, cfg, name: str, results, units, details) -> None:
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(workdir, "details.json"), "w") as f:
        json.dump(details, f, indent=1)
    arrays = {}
    for tname, ms in units.items():
        for metric, m in ms.items():
            arrays.update(stats.to_arrays(m, f"{tname}/{metric}"))
    np.savez(os.path.join(workdir, "units.npz"), **arrays)
    rows = []
    for tname in results:
        task = tasks.get(tname)
        for metric in results[tname]:
            if metric.endswith("_ci"):
                continue
            title = (cfg.tasks[tname].title if tname in cfg.tasks else task.title) if metric == task.metric else f"  {metric}"
            lower = task.lower_is_better_for(metric)
            size = _size(details["tasks"][tname], metric)
            rows.append((title, metric, results[tname][metric], tuple(results[tname][f"{metric}_ci"]),
                         lower, size))
    table = report.format_table(name, rows)
    with open(os.path.join(workdir, "results.txt"), "w") as f:
        f.write(table + "\n")
    report.plot_layer_weights({t: np.array(d["layer_weights"]) for t, d in details["tasks"].items()
                               if d["layer_weights"]},
                              os.path.join(workdir, "layer_weights.png"), f"learned layer weights, upstream {name}")
    if "abx" in details["tasks"]:
        abx_info = {k: v for k, v in details["tasks"]["abx"].items() if k in ("word", "phone")}
        report.plot_abx_layers(abx_info, os.path.join(workdir, "abx_layers.png"), f"ABX per layer, upstream {name}")
    report.plot_curves({t: d["curve"] for t, d in details["tasks"].items() if d["curve"]},
                       {t: (cfg.tasks[t].get("select_metric", "") if t in cfg.tasks else "") or tasks.get(t).metric
                        for t in details["tasks"]},
                       {t: d["best_step"] for t, d in details["tasks"].items()},
                       os.path.join(workdir, "curves.png"), f"validation curves, upstream {name}")


def _size(d: dict[str, Any], metric: str) -> str:
    """Test size of a task as the table shows it."""
    if "triplets" in d:  # ABX
        return f"{d['triplets'][metric]} test triplets, {d['utterances'][metric]} utts"
    size = f"{d['utterances']['test']} utts"
    if "trials" in d:
        size += f", {d['trials']['test']} trials"
    return size


def _read_folder(workdir: str, select: Callable[[str, str], bool]) -> tuple[dict, dict, dict, dict]:
    """Results, units, details and task keys of the tasks in `workdir` for which
    `select(task, its stored key)` holds; empty when the folder holds no results."""
    paths = [os.path.join(workdir, n) for n in ("results.json", "details.json", "units.npz")]
    if not all(os.path.exists(p) for p in paths):
        return {}, {}, {}, {}
    with open(paths[1]) as f:
        details = json.load(f)
    with open(paths[0]) as f:
        results = json.load(f)
    arrays = np.load(paths[2])
    stored = details.get("task_keys", {})
    chosen = [t for t in results if t in details.get("tasks", {}) and select(t, stored.get(t, ""))]
    units = {t: {m: stats.from_arrays(arrays, f"{t}/{m}") for m in results[t] if not m.endswith("_ci")}
             for t in chosen}
    return ({t: results[t] for t in chosen}, units, {t: details["tasks"][t] for t in chosen},
            {t: stored.get(t, "") for t in chosen})


def _load_cached(workdir: str, keys: dict[str, str]) -> tuple[dict, dict, dict]:
    """Results, units and details of the tasks in `workdir` whose key matches `keys`."""
    return _read_folder(workdir, lambda t, key: keys.get(t) == key)[:3]


def _other_tasks(workdir: str, run: Sequence[str]) -> tuple[dict, dict, dict, dict]:
    """What `workdir` holds for tasks outside `run`, so that writing this run's results keeps them."""
    return _read_folder(workdir, lambda t, key: t not in run)


def _check_spec(spec: str) -> None:
    """A clear error before any work for an upstream that cannot exist."""
    if spec in ("fbank", "mfcc"):
        return
    path = spec.split(":")[1] if spec.startswith("random:") else spec
    if not os.path.exists(path):
        what = "config file" if spec.startswith("random:") else "checkpoint path"
        raise FileNotFoundError(f"upstream {spec!r}: not 'fbank' or 'mfcc' and no such {what}")


def upstream_names(specs: list[str]) -> list[str]:
    """Short unique names: `fbank`, `mfcc`, `random-NAME`, or a checkpoint folder's base name."""
    names = []
    for spec in specs:
        if spec.startswith("random:"):
            base = "random-" + os.path.splitext(os.path.basename(spec.split(":")[1]))[0]
        elif os.path.exists(spec):
            base = os.path.basename(os.path.normpath(spec))
            if base.isdigit() or base == "checkpoints":  # a step folder: name it by its run
                parts = os.path.normpath(spec).split(os.sep)
                base = "-".join(p for p in parts[-3:] if p != "checkpoints")
        else:
            base = spec
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def parse_normalize(value: str | bool | None) -> bool | None:
    if value in (None, "auto"):
        return None
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"--upstream_normalize must be auto, true or false; got {value!r}")


def evaluate(cfg, upstream_spec: str, workdir: str, log: Callable[[str], None] = print,
             upstream_normalize: str | bool | None = "auto") -> dict[str, Any]:
    """Runs every task of `cfg.tasks_to_run` on each upstream of the comma-separated spec.

    Returns:
        {task: {metric: value, metric_ci: [lo, hi]}} for one upstream; {name: that} for several.
    """
    t_start = time.time()
    for name in cfg.tasks_to_run:
        tasks.get(name)
        if name not in cfg.tasks:
            raise KeyError(f"task {name!r} has no settings under config.tasks ({sorted(cfg.tasks)})")
    specs = [s.strip() for s in upstream_spec.split(",") if s.strip()]
    if not specs:
        raise ValueError("--upstream names no upstream")
    for spec in specs:
        _check_spec(spec)
    normalize = parse_normalize(upstream_normalize)
    names = upstream_names(specs)
    os.makedirs(workdir, exist_ok=True)
    runs = {}
    for spec, name in zip(specs, names):
        out = workdir if len(specs) == 1 else os.path.join(workdir, name)
        runs[name] = evaluate_upstream(cfg, spec, name, out, workdir, normalize, log)
        log(open(os.path.join(out, "results.txt")).read().rstrip())
    if len(specs) > 1:
        table = report.write_comparison(workdir, cfg, names, runs)
        log(table)
    log(f"total {time.time() - t_start:.0f}s, peak RSS {peak_rss_mib():.0f} MiB; results in {workdir}")
    if len(specs) == 1:
        return runs[names[0]]["results"]
    return {n: r["results"] for n, r in runs.items()}


if __name__ == "__main__":
    from ssl_jax.training.config_check import run_upstream_command

    run_upstream_command(evaluate, "evaluation suite config (configs/eval/*.py)",
                         "'fbank', 'mfcc', 'random:CONFIG' or an ssl_jax checkpoint / workdir; several comma-separated")
