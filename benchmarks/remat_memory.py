"""What each `model.remat` policy costs and saves: XLA's compiled analysis of the train step.

  python benchmarks/remat_memory.py --config=configs/w2v2_base.py --batch=4 --seconds=4

For every policy in `ssl_jax.models.transformer.REMAT_POLICIES` ("full" is "nothing_saveable"),
compiles the recipe's full train step (nothing runs) and prints its FLOPs (XLA's cost analysis:
what the recomputation adds) and its scratch memory (XLA's memory analysis: what it saves), with
ratios against no remat. The figures are the compiler's for this machine's backend.
"""

import sys

from absl import app

from ssl_jax import bench  # its flags: --config, --batch, --seconds


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    from ssl_jax import objectives
    from ssl_jax.models.transformer import REMAT_POLICIES

    rows = []
    for policy in (p for p in REMAT_POLICIES if p != "full"):
        config = bench.bench_config(bench._CONFIG.value)
        with config.unlocked():
            config.model.remat = policy
        samples = int(round(bench._SECONDS.value * bench.SAMPLE_RATE))
        inputs = bench.make_inputs(objectives.build(config), bench._BATCH.value, samples)
        _, info = bench.jax_programs(config, inputs)
        rows.append((policy, info["programs"]["train_step"]))
    base = rows[0][1]
    print(f"{bench._BATCH.value} x {bench._SECONDS.value:.1f} s, backend {jax.default_backend()}, train step")
    print(f"{'remat':<34}{'GFLOP':>9}{'x none':>8}{'scratch MiB':>13}{'x none':>8}")
    for policy, facts in rows:
        print(f"{policy:<34}{facts['flops'] / 1e9:>9.1f}{facts['flops'] / base['flops']:>8.2f}"
              f"{facts['temp_bytes'] / 2**20:>13.1f}{facts['temp_bytes'] / base['temp_bytes']:>8.2f}")


if __name__ == "__main__":
    sys.exit(app.run(main))
