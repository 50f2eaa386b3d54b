"""Scale arithmetic for wav2vec 2.0 BASE and LARGE pretraining (Baevski et al., 2020, Sec. 4.2):
the FLOPs of one train step, what each device holds under three sharding strategies, and the
wall-clock that the paper's update counts would take on a TPU v5e-64 and on 8 x H100 SXM.

  nice -n 19 python benchmarks/scale.py --models=base,large --devices=8

Nothing runs and nothing is allocated: the trainer's own step (`training.loop.make_train_step`,
traced with `parallel.sharding.activations_on`, jitted with the state's shardings and the state
donated, as `python -m ssl_jax.train` compiles it) is lowered from abstract arrays and compiled
for `--devices` fake CPU devices. From the compiled programs it prints:

1. FLOPs (XLA's cost analysis) of 1 and 2 crops on one device, which give the step's cost per
   crop and its fixed part, and the same program compiled data-parallel over all devices, which
   tells whether XLA counts the FLOPs of one device or of the whole SPMD program.
2. Memory per device (XLA's memory analysis: arguments, outputs, aliased, scratch, code) under
   data parallelism, FSDP and FSDP + tensor parallelism, for the paper's per-GPU batch.
3. Parameter and optimizer bytes per device, from the shardings of the abstract train state.
4. Projected pretraining time at an assumed model FLOP utilisation (`--mfu`).

Every figure comes from XLA:CPU. Its FLOP count is taken to equal what XLA counts for TPU or GPU
(the same program; backend passes may move it slightly); its buffer assignment and scheduling
differ from the accelerators', so its scratch sizes are relative figures only. docs/scaling.md
holds a run's output, the assumptions and the sources of the paper's and vendors' numbers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import math
import os
import platform
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ssl_jax.bench import DATASHEET_BF16_PEAK  # noqa: E402  (imports no jax)

SAMPLE_RATE = 16_000
V100_FP16_PEAK = 125e12  # V100 SXM2 datasheet, "Tensor Performance 125 TFLOPS" (fp16; no bf16 on Volta)
HARDWARE = (  # (name, chips, dense bf16 peak FLOP/s per chip)
    ("TPU v5e-64", 64, DATASHEET_BF16_PEAK["TPU v5 lite"]),
    ("8 x H100 SXM", 8, DATASHEET_BF16_PEAK["NVIDIA H100"]),
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A paper setting: its config, batch budget (samples per GPU x GPUs) and runs
    (corpus, updates, days on the paper's V100s)."""

    name: str
    config: str  # path relative to the repository root, with an optional ":arg"
    per_gpu_samples: int
    gpus: int
    runs: tuple[tuple[str, int, float], ...]


RECIPES = {
    "base": Recipe("BASE", "configs/w2v2_base.py", 1_400_000, 64, (("LS-960", 400_000, 1.6),)),
    "large": Recipe("LARGE", "configs/w2v2_large.py:lv60k", 1_200_000, 128,
                    (("LS-960", 250_000, 2.3), ("LV-60k", 600_000, 5.2))),
}


@dataclasses.dataclass
class Program:
    """One train-step program: lowered, then compiled."""

    lowered: Any
    state_bytes: dict[str, int]  # bytes per device of the state's params, opt_state and all of it
    lower_seconds: float
    flops: float = math.nan  # XLA's cost analysis of the compiled (per-device) program
    memory: dict[str, int] = dataclasses.field(default_factory=dict)  # bytes per device
    compile_seconds: float = math.nan

    def compile(self) -> "Program":
        t = time.perf_counter()
        compiled = self.lowered.compile()
        self.compile_seconds = time.perf_counter() - t
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self.flops = float(cost["flops"])
        mem = compiled.memory_analysis()
        self.memory = {k: int(getattr(mem, f"{k}_size_in_bytes", 0) or 0) if mem is not None else -1
                       for k in ("argument", "output", "alias", "temp", "generated_code")}
        self.lowered = None  # the HLO is no longer needed
        return self


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="base,large", help="comma-separated: " + ", ".join(RECIPES))
    p.add_argument("--devices", type=int, default=8, help="fake CPU devices (even: FSDP + tensor uses tensor=2)")
    p.add_argument("--per_device_batch_seconds", type=float, default=0.0,
                   help="audio per device in the memory compiles, filled with whole crops of the recipe's "
                        "data.max_seconds; 0 = the paper's per-GPU budget (BASE 1.4M, LARGE 1.2M samples)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                   help="model.dtype (the launchers pass bfloat16)")
    p.add_argument("--remat", default="", help="model.remat for every model; empty = each recipe's own "
                   "(LARGE recomputes each layer: 'full')")
    p.add_argument("--compile_threads", type=int, default=2, help="programs compiled at once (XLA releases the GIL)")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed FLOP utilisation for the projections")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in RECIPES]
    if unknown or not args.models:
        p.error(f"--models: unknown {unknown}; valid: {', '.join(RECIPES)}")
    if args.devices < 2 or args.devices % 2:
        p.error(f"--devices must be even and at least 2, got {args.devices}")
    if args.compile_threads < 1:
        p.error("--compile_threads must be >= 1")
    if not 0 < args.mfu <= 1:
        p.error(f"--mfu must be in (0, 1], got {args.mfu}")
    if args.per_device_batch_seconds < 0:
        p.error("--per_device_batch_seconds must be >= 0")
    return args


def strategies(devices: int) -> dict[str, tuple[int, int, int]]:
    """Mesh shapes (data, fsdp, tensor) compared on `devices` devices."""
    return {"data parallel": (devices, 1, 1), "FSDP": (1, devices, 1), "FSDP + tensor": (1, devices // 2, 2)}


def load_config(recipe: Recipe, dtype: str, remat: str) -> Any:
    """The recipe's config with `model.dtype` (and `model.remat` unless empty) set."""
    from ssl_jax.training.config_check import load_config_file

    path, _, arg = recipe.config.partition(":")
    config = load_config_file(os.path.join(ROOT, path) + (f":{arg}" if arg else ""))
    with config.unlocked():
        config.model.dtype = dtype
        if remat:
            config.model.remat = remat
    return config


def device_bytes(tree: Any) -> int:
    """Bytes of `tree`'s arrays that one device holds, from their shardings."""
    import jax

    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def lower_step(config: Any, shape: tuple[int, int, int], batch: int, crop: int) -> Program:
    """The trainer's train step for a [batch, crop] batch on a (data, fsdp, tensor) mesh of the
    first devices, lowered from abstract arrays only (as `python -m ssl_jax.train` builds it)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from ssl_jax import objectives
    from ssl_jax.parallel import mesh as mesh_lib
    from ssl_jax.parallel import sharding as sharding_lib
    from ssl_jax.training import loop
    from ssl_jax.training import state as state_lib
    from ssl_jax.training.optimizer import make_optimizer

    t = time.perf_counter()
    mesh = mesh_lib.make_mesh(dict(zip(mesh_lib.AXES, shape)), devices=jax.devices()[: math.prod(shape)])
    sharding_lib.check_model(config.model, mesh)
    objective = objectives.build(config)
    tx, schedule = make_optimizer(config.optim, int(config.train.steps))
    shapes = {"audio": ((batch, crop), jnp.float32), "audio_mask": ((batch, crop), jnp.bool_)}

    def init_boxed(key):
        zeros = {k: jnp.zeros(s, d) for k, (s, d) in shapes.items()}
        params = objective.init(key, zeros)
        return state_lib.TrainState.create(params, tx, objective.init_state(jax.random.fold_in(key, 1), zeros))

    boxed = jax.eval_shape(init_boxed, jax.random.key(0))
    state_sh = sharding_lib.tree_shardings(boxed, mesh)
    state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), nn.unbox(boxed), state_sh)
    batch_sh = {k: sharding_lib.batch_sharding(mesh, len(s)) for k, (s, _) in shapes.items()}
    abstract_batch = {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sh[k]) for k, (s, d) in shapes.items()}
    replicated = sharding_lib.replicated(mesh)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
    step = jax.jit(
        sharding_lib.activations_on(loop.make_train_step(objective, tx, schedule, 1), mesh),
        in_shardings=(state_sh, batch_sh, replicated),
        out_shardings=(state_sh, replicated),
        donate_argnums=0,
    )
    lowered = step.lower(state, abstract_batch, rng)
    return Program(
        lowered=lowered,
        state_bytes={"params": device_bytes(state.params), "opt_state": device_bytes(state.opt_state),
                     "all": device_bytes(state)},
        lower_seconds=time.perf_counter() - t,
    )


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.1f} h" if hours < 48 else f"{hours:,.0f} h ({hours / 24:.1f} d)"


def run_model(key: str, args: argparse.Namespace, log: list[str]) -> dict:
    """All programs of one recipe, lowered one by one and compiled `--compile_threads` at a time;
    returns the figures the tables need."""
    recipe = RECIPES[key]
    config = load_config(recipe, args.dtype, args.remat)
    crop_seconds = float(config.data.max_seconds)
    crop = int(round(crop_seconds * SAMPLE_RATE))
    budget = args.per_device_batch_seconds or recipe.per_gpu_samples / SAMPLE_RATE
    per_device = int(budget / crop_seconds + 1e-9)
    if per_device < 1:
        raise SystemExit(f"--per_device_batch_seconds={budget} holds no {crop_seconds} s crop of {recipe.name}")
    t = time.perf_counter()
    programs = {("one", b): lower_step(config, (1, 1, 1), b, crop) for b in (1, 2)}
    for name, shape in strategies(args.devices).items():
        programs[("shard", name)] = lower_step(config, shape, per_device * args.devices, crop)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.compile_threads) as pool:
        list(pool.map(Program.compile, programs.values()))
    log.append(f"{recipe.name}: {time.perf_counter() - t:.0f} s (" + ", ".join(
        f"{k[1] if k[0] == 'shard' else f'{k[1]} crop(s) on 1 device'} {p.lower_seconds:.0f} + {p.compile_seconds:.0f} s"
        for k, p in programs.items()) + ")")
    print(log[-1], file=sys.stderr, flush=True)
    return {"recipe": recipe, "crop": crop, "per_device": per_device, "devices": args.devices,
            "remat": config.model.remat, "layerdrop": float(config.model.layerdrop),
            "one": {k[1]: p for k, p in programs.items() if k[0] == "one"},
            "shard": {k[1]: p for k, p in programs.items() if k[0] == "shard"}}


def report(results: list[dict], args: argparse.Namespace, log: list[str], wall: float) -> str:
    """The markdown tables and the notes under them."""
    import jax

    n = args.devices
    parts = [f"Compiled {datetime.date.today().isoformat()} on {platform.machine()} "
             f"({os.cpu_count()} CPU cores), XLA:CPU with {n} fake devices, jax "
             f"{jax.__version__}, model.dtype={args.dtype}."]

    # 1. FLOPs: per crop, fixed part, and what XLA's count under SPMD is.
    rows, fit = [], {}
    for r in results:
        f1, f2 = r["one"][1].flops, r["one"][2].flops
        per_crop, fixed = f2 - f1, 2 * f1 - f2
        fit[r["recipe"].name] = (per_crop, fixed)
        u = r["per_device"]
        dp = r["shard"]["data parallel"].flops
        predicted = fixed + per_crop * u
        rows.append([r["recipe"].name, f"{r['crop'] / SAMPLE_RATE:.3g} s", f"{f1 / 1e12:.3f}", f"{f2 / 1e12:.3f}",
                     f"{f2 / f1:.3f}", f"{per_crop / 1e12:.3f}", f"{fixed / 1e9:.1f}",
                     f"{n * u} ({u}/device)", f"{dp / 1e12:.3f}", f"{dp / predicted:.3f}", f"{dp / (n * predicted):.3f}"])
    parts.append("### 1. FLOPs of one train step (XLA cost analysis)\n\n" + table(
        ["model", "crop", "1 device, 1 crop (TFLOP)", "1 device, 2 crops (TFLOP)", "2 crops / 1 crop", "per crop (TFLOP)",
         "fixed (GFLOP)", f"data parallel x{n}: global crops", "its count (TFLOP)",
         "count / (fixed + per crop x crops per device)", "count / whole-batch FLOPs"], rows))
    per_device = all(abs(float(row[9]) - 1) < 0.02 for row in rows)
    parts.append(
        ("XLA's count under SPMD is **per device**: the data-parallel program's count matches one device's "
         "share of the batch, not the whole batch." if per_device else
         "XLA's count under SPMD did NOT match one device's share within 2%: read the last two columns.")
        + " The fixed part is the per-step work that does not grow with the batch (gradient clipping, AdamW, "
        "the update); the FLOPs of a step are taken as fixed + per crop x crops, linear in the audio at a "
        "fixed crop length (attention is quadratic in the crop length, not in the number of crops).")

    # 2 and 3. Memory and state bytes per device by strategy.
    rows = []
    for r in results:
        dp_state = r["shard"]["data parallel"].state_bytes
        for name, prog in r["shard"].items():
            m, s = prog.memory, prog.state_bytes
            total = m["argument"] + m["output"] - m["alias"] + m["temp"] + m["generated_code"]
            shape = strategies(n)[name]
            rows.append([r["recipe"].name, f"{name} {shape}", f"{r['per_device'] * n // (shape[0] * shape[1])}",
                         mib(s["params"]), mib(s["opt_state"]), f"{s['all'] / dp_state['all']:.3f}",
                         mib(m["argument"]), mib(m["output"]), mib(m["alias"]), mib(m["temp"]),
                         mib(m["generated_code"]), f"{total / 2**30:,.2f}",
                         f"{prog.flops / 1e12:.3f}", f"{prog.flops * n / whole_batch_flops(r, fit):.3f}"])
    parts.append(
        f"### 2-3. Per device (XLA:CPU), {n} devices, global batch {n} x crops per device (the paper's per-GPU budget)\n\n"
        + table(["model", "strategy (data, fsdp, tensor)", "crops per batch shard", "params MiB", "optimizer MiB",
                 "state / data parallel", "arguments MiB", "outputs MiB", "aliased MiB", "scratch MiB",
                 "code MiB", "total GiB", "FLOPs per device (TFLOP)", "x devices / whole batch"], rows))
    parts.append(
        "Parameter and optimizer bytes come from the state's shardings (exact). Arguments, outputs, scratch "
        "and code are XLA:CPU's memory analysis per device: total = arguments + outputs - aliased (the donated "
        "state) + scratch + code. XLA:CPU's buffer assignment and scheduling are not TPU's or GPU's, so read "
        "the scratch column as a comparison between strategies, not as a TPU/GPU footprint. The last column is "
        "the FLOPs of all devices over the one-device FLOPs of the same global batch: above 1 is work repeated "
        "on several devices (under tensor parallelism, the parts of the step that are not split over heads or "
        "MLP units run on both devices of a tensor pair).")

    # 4. Projections.
    rows = []
    for r in results:
        rec = r["recipe"]
        per_crop, fixed = fit[rec.name]
        samples = rec.per_gpu_samples * rec.gpus
        crops = samples / r["crop"]
        step = fixed + per_crop * crops
        for corpus, updates, days in rec.runs:
            total = step * updates
            row = [f"{rec.name} {corpus}", f"{updates // 1000}k", f"{samples / 1e6:.1f}M ({samples / SAMPLE_RATE / 3600:.2f} h)",
                   f"{step / 1e12:,.0f}", f"{total / 1e18:,.0f}"]
            row += [duration(total / (chips * peak * args.mfu)) for _, chips, peak in HARDWARE]
            row += [f"{rec.gpus} x V100, {days} d: {total / (rec.gpus * V100_FP16_PEAK * days * 86400):.1%}"]
            rows.append(row)
    parts.append(
        f"### 4. Projected pretraining wall-clock at {args.mfu:.0%} FLOP utilisation\n\n" + table(
            ["recipe", "updates", "batch (samples, audio)", "TFLOP per step", "total EFLOP"]
            + [f"{name} ({chips} x {peak / 1e12:.0f} TFLOP/s)" for name, chips, peak in HARDWARE]
            + ["paper's run -> its implied utilisation of V100 fp16 peak (125 TFLOP/s)"], rows))
    peaks = "; ".join(f"{name}: {peak / 1e12:.0f} TFLOP/s per chip" for name, _, peak in HARDWARE)
    notes = [
        f"Assumptions: peak = dense bf16 datasheet figure ({peaks}; H100's is half NVIDIA's figure 'with "
        "sparsity'); the step runs at the assumed utilisation of that peak, all of it "
        "(no time for input, checkpoints or evaluation); FLOPs are linear in the audio of the batch at the recipe's "
        "crop length (the paper's batch is a sample budget: every crop full length, padding counted as audio); "
        "XLA:CPU counts the FLOPs XLA would count for TPU/GPU (the same HLO; backend fusions and library calls "
        "such as cuDNN attention, which the training step does not use while attention dropout is on, could "
        "change the count).",
        "The count includes everything the step executes: dropout, the backward pass, AdamW and, where the "
        "recipe recomputes activations (model.remat: " + ", ".join(
            f"{r['recipe'].name} {r['remat']}" for r in results) + "), the recomputed forward pass, so the "
        "utilisation is of executed FLOPs (hardware FLOP utilisation). A LayerDrop conditional counts as its "
        "costlier branch (every layer runs); at LayerDrop p the layers' expected work is (1 - p) of it ("
        + ", ".join(f"{r['recipe'].name} p={r['layerdrop']:g}" for r in results) + ").",
    ]
    if any(r["recipe"] is RECIPES["large"] for r in results):
        notes.append("LARGE is compiled with the lv60k recipe (LayerNorm extractor with conv bias, pre-LN); the "
                     "ls960 recipe's extractor and post-LN blocks differ only in normalisation, so one per-step "
                     "figure serves both.")
    parts.append("\n\n".join(notes))
    parts.append(f"Wall-clock per model (lower + compile of each program, {args.compile_threads} compiles at a time): "
                 + "; ".join(log) + f". Whole run: {wall / 60:.1f} min.")
    return "\n\n".join(parts)


def whole_batch_flops(r: dict, fit: dict) -> float:
    """One device's FLOPs for the global batch of the strategy compiles: fixed + per crop x crops."""
    per_crop, fixed = fit[r["recipe"].name]
    return fixed + per_crop * r["per_device"] * r["devices"]


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    # The programs never run: LLVM's optimisation of the CPU code is skipped. The HLO passes that
    # the cost and memory analyses read are the same with and without it.
    flags = (f"--xla_force_host_platform_device_count={args.devices} --xla_backend_optimization_level=0 "
             "--xla_llvm_disable_expensive_passes=true")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    import jax

    if jax.default_backend() != "cpu" or jax.device_count() != args.devices:
        raise SystemExit(f"needs {args.devices} CPU devices, found {jax.device_count()} {jax.default_backend()} "
                         "devices (was jax initialised before this script set XLA_FLAGS?)")
    from ssl_jax.models.transformer import remat_policy

    if args.remat:
        try:
            remat_policy(args.remat)
        except ValueError as e:
            raise SystemExit(f"--remat: {e}") from None
    t = time.perf_counter()
    log: list[str] = []
    results = []
    for key in args.models:
        results.append(run_model(key, args, log))
    print(report(results, args, log, time.perf_counter() - t))


if __name__ == "__main__":
    main(sys.argv[1:])
