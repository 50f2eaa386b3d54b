"""What computing masked-prediction targets inside the step costs, against reading them.

    python benchmarks/bench_targets.py [--config configs/hubert_tiny.py] \
        [--checkpoint runs/hubert_tiny_it1] [--repeats 20]

Times the jitted training step (forward, backward, Adam update) of a HuBERT recipe on one batch
of its own shape, three ways: targets from MFCC frames in the graph (iteration 1); targets from
a frozen checkpoint's layer in the graph (iteration 2, with `--checkpoint`); and targets given
with the batch as cluster ids (what an offline path that writes frame targets beside the shards
would cost per step: nothing but the lookup). Prints milliseconds per step and the ratio of
each in-graph path to the offline one, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ssl_jax import kmeans, objectives  # noqa: E402
from ssl_jax.training.config_check import load_config_file  # noqa: E402


def _step(obj, state, batch, repeats: int) -> float:
    params = nn.unbox(obj.init(jax.random.key(0), batch))
    tx = optax.adam(1e-4)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch):
        (loss, _), g = jax.value_and_grad(obj.loss, has_aux=True)(params, batch, jax.random.key(1), 0, True, state)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    jax.block_until_ready(step(params, opt, batch))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(step(params, opt, batch))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _objective(config, source: str, checkpoint: str | None):
    c = load_config_file(config + (":iter2" if source == "layer" else ""))
    if source == "layer":
        c.objective.targets.checkpoint = checkpoint
    obj = objectives.build(c)
    obj.teacher = None
    if source == "layer":
        from ssl_jax import cluster

        obj.teacher = cluster.load_teacher(c)
    dim = 39 if source == "mfcc" else obj.teacher[0].hidden_size
    rng = np.random.default_rng(0)
    obj.codebooks = kmeans.Codebooks(np.zeros(dim, np.float32), np.ones(dim, np.float32),
                                     [rng.standard_normal((k, dim)).astype(np.float32) for k in obj.num_classes], {})
    return c, obj


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                                                    "hubert_tiny.py"))
    p.add_argument("--checkpoint", default="", help="an iteration-1 run for the layer-target row")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    rows = {}
    for source in ("mfcc", "layer") if args.checkpoint else ("mfcc",):
        c, obj = _objective(args.config, source, args.checkpoint)
        samples = int(round(c.data.max_seconds * 16000))
        rng = np.random.default_rng(1)
        batch = {"audio": jnp.asarray(0.1 * rng.standard_normal((c.train.batch_size, samples)), jnp.float32),
                 "audio_mask": jnp.ones((c.train.batch_size, samples), bool)}
        state = nn.unbox(obj.init_state(jax.random.key(2), batch))
        rows[f"{source} targets in the step"] = _step(obj, state, batch, args.repeats)
        if source == "mfcc":
            ids = obj.target_ids(state, batch)
            given = dict(batch, **{f"target_ids_{i}": x for i, x in enumerate(ids)})
            rows["targets read with the batch (offline)"] = _step(obj, state, given, args.repeats)
    offline = rows["targets read with the batch (offline)"]
    print(f"{args.config}: batch {c.train.batch_size} x {c.data.max_seconds:g} s, median of {args.repeats} steps")
    for name, sec in rows.items():
        print(f"  {name:40s} {1e3 * sec:8.1f} ms/step  x{sec / offline:.2f} of offline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
