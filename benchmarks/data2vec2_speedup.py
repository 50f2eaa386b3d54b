"""data2vec 2.0's training speed against data2vec at the same model size, to equal in-training ABX.

  python benchmarks/data2vec2_speedup.py --d2v=runs/data2vec_tiny --d2v2=runs/data2vec2_tiny \
      [--d2v_config=configs/data2vec_tiny.py --d2v2_config=configs/data2vec2_tiny.py --steps=10]

1. Step time: both recipes' compiled training steps (forward, backward) on the same random
   batch shape, calls interleaved so machine load falls on both alike (`ssl_jax.bench`).
2. Steps to quality: from the two runs' `metrics.jsonl`, data2vec's best in-training
   across-speaker word ABX (`eval_abx_word`) and the first eval step at which data2vec 2.0
   is at least as good.
3. Speed-up = (data2vec's steps to its best x its step time) / (data2vec 2.0's steps to
   equal it x its step time), with the eval interval bounding the steps from above.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_jax import bench, objectives  # noqa: E402
from ssl_jax.training.config_check import load_config_file  # noqa: E402
from ssl_jax.training.logging import read_metrics  # noqa: E402


def abx_curve(workdir: str) -> list[tuple[int, float]]:
    """(step, eval_abx_word) of a run's evaluations, in step order."""
    rows = [(int(r["step"]), float(r["eval_abx_word"])) for r in read_metrics(workdir) if "eval_abx_word" in r]
    if not rows:
        raise ValueError(f"{workdir}: metrics.jsonl has no eval_abx_word (train.abx_probe off?)")
    return sorted(rows)


def step_seconds(configs: dict[str, str], steps: int) -> dict[str, float]:
    """Median seconds of each recipe's training step, interleaved."""
    fns = {}
    for name, path in configs.items():
        c = bench.bench_config(load_config_file(path))
        samples = int(round(c.data.max_seconds * bench.SAMPLE_RATE))
        inputs = bench.make_inputs(objectives.build(c), int(c.train.batch_size), samples)
        fns[name], _ = bench.jax_step(c, inputs)
    times = bench._interleaved_times(fns, steps)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d2v", required=True, help="data2vec run (workdir)")
    p.add_argument("--d2v2", required=True, help="data2vec 2.0 run (workdir)")
    p.add_argument("--d2v_config", default="configs/data2vec_tiny.py")
    p.add_argument("--d2v2_config", default="configs/data2vec2_tiny.py")
    p.add_argument("--steps", type=int, default=10, help="timed steps of each")
    a = p.parse_args()

    secs = step_seconds({"data2vec": a.d2v_config, "data2vec2": a.d2v2_config}, a.steps)
    d2v, d2v2 = abx_curve(a.d2v), abx_curve(a.d2v2)
    trained = [(s, v) for s, v in d2v if s > 0] or d2v
    best_step, best = min(trained, key=lambda sv: (sv[1], sv[0]))
    reach = next(((s, v) for s, v in d2v2 if s > 0 and v <= best), None)
    out = {"step_seconds": secs, "data2vec_abx": d2v, "data2vec2_abx": d2v2,
           "target": {"abx": best, "data2vec_step": best_step}}
    print(f"step time: data2vec {secs['data2vec']:.3f} s, data2vec 2.0 {secs['data2vec2']:.3f} s "
          f"(x{secs['data2vec2'] / secs['data2vec']:.2f} per step)")
    print(f"data2vec's best word ABX {100 * best:.2f}% at step {best_step}")
    if reach is None:
        print(f"data2vec 2.0 does not reach it (best {100 * min(v for _, v in d2v2):.2f}%)")
    else:
        t1, t2 = best_step * secs["data2vec"], reach[0] * secs["data2vec2"]
        out.update(data2vec2_step=reach[0], data2vec_seconds=t1, data2vec2_seconds=t2, speedup=t1 / t2)
        print(f"data2vec 2.0 reaches {100 * reach[1]:.2f}% by step {reach[0]} (first eval at or below it): "
              f"{t2:.0f} s of steps against {t1:.0f} s, speed-up x{t1 / t2:.1f} (at least; evals every "
              f"{d2v2[1][0] - d2v2[0][0]} steps)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
