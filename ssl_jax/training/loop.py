"""The pretraining loop behind `python -m ssl_jax.train`: sharded state, one jitted step, resume.

Stages of `train`: `open_run` (checkpoints, data order) -> mesh, objective, optimizer ->
`state_layout` (abstract state, shardings) -> `init_or_restore` -> `compile_steps` (one program
per bucket shape) -> `Run.loop` (log, eval, checkpoint, rollback, SIGTERM) -> `Run.finish` -> summary.

A step with a non-finite loss or gradient leaves the state as it was (`make_train_step`);
`train.rollback_after` such steps in a row roll the run back to the latest checkpoint saved
before them and go on with a new data order (seed + rollbacks), at most `train.max_rollbacks`
times.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import objectives
from ssl_jax.data.shards import SAMPLE_RATE
from ssl_jax.objectives import STATE_INPUT
from ssl_jax.parallel import mesh as mesh_lib
from ssl_jax.parallel import processes
from ssl_jax.parallel import sharding as sharding_lib
from ssl_jax.training import abx_probe
from ssl_jax.training import checkpoint as ckpt_lib
from ssl_jax.training import compiled as compiled_lib
from ssl_jax.training import state as state_lib
from ssl_jax.training.logging import MetricLogger
from ssl_jax.training.optimizer import NO_GRADIENT, hold, make_optimizer

log = logging.getLogger(__name__)

BATCH_KEYS = ("audio", "audio_mask")
OPTIONAL_KEYS = ("clean_audio",)  # with data.augment.clean_copy: the crops before augmentation


# ----------------------------------------------------------------------------- data


def shard_dir(config: Any) -> str:
    """`data.path`, or the embedded corpus (built once into the cache) when it is empty."""
    if config.data.path:
        return config.data.path
    from ssl_jax.data import synth

    return synth.ensure_corpus(hours=config.data.synth_hours, seed=config.data.synth_seed)


def train_batches(config: Any, path: str, seed_offset: int = 0):
    """The training iterator; its data order, crops and augmentation follow `seed + seed_offset`
    (the offset is the number of rollbacks behind the run)."""
    from ssl_jax.data import pipeline

    d = config.data
    if config.train.batch_size % jax.process_count():
        raise ValueError(f"train.batch_size {config.train.batch_size} is not divisible by {jax.process_count()} processes")
    return pipeline.train_iterator(
        path,
        d.train_split,
        batch_size=config.train.batch_size // jax.process_count(),
        max_samples=int(round(d.max_seconds * SAMPLE_RATE)),
        min_samples=int(round(d.min_seconds * SAMPLE_RATE)),
        num_buckets=d.num_buckets,
        normalize=d.normalize,
        seed=config.seed + seed_offset,
        num_workers=d.num_workers,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        augment=d.get("augment"),
    )


def eval_batches(config: Any, path: str) -> list[dict]:
    """The first `train.eval_batches` batches of `data.eval_split` (fixed, so evals compare)."""
    from ssl_jax.data import pipeline

    d = config.data
    it = pipeline.eval_iterator(
        path,
        d.eval_split,
        batch_size=config.train.batch_size // jax.process_count(),  # this process' rows only
        max_samples=int(round(d.max_seconds * SAMPLE_RATE)),
        num_buckets=d.num_buckets,
        normalize=d.normalize,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    out = []
    for batch in it:
        out.append({k: np.asarray(batch[k]) for k in BATCH_KEYS})
        if len(out) >= config.train.eval_batches:
            break
    return out


# ----------------------------------------------------------------------------- steps


class CollapseMonitor:
    """Watches the objective's `floors` (codebook perplexity, target spread, accuracy above
    chance) in the logged metrics.

    From `start_step` (the end of warm-up) every logged value under its floor is warned about;
    with `patience` > 0, that many logged steps in a row with some value under its floor ask the
    run to stop (`check` returns the reason).
    """

    def __init__(self, floors: dict[str, float], start_step: int, patience: int = 0):
        self.floors, self.start_step, self.patience = dict(floors), int(start_step), int(patience)
        self.in_a_row = 0
        self.warnings = 0

    def check(self, metrics: dict, step: int) -> str | None:
        if step < self.start_step:
            return None
        low = {k: float(metrics[k]) for k, f in self.floors.items() if k in metrics and float(metrics[k]) < f}
        if not low:
            self.in_a_row = 0
            return None
        self.in_a_row += 1
        self.warnings += 1
        what = ", ".join(f"{k} {v:.3g} < {self.floors[k]:.3g}" for k, v in low.items())
        log.warning("step %d: possible collapse: %s", step, what)
        if self.patience and self.in_a_row >= self.patience:
            return f"collapse at step {step} ({what}, {self.in_a_row} logged steps in a row; train.collapse_patience)"
        return None


class NonFiniteStreak:
    """Finds runs of `limit` updates skipped in a row (non-finite loss or gradient) in the
    `skipped` counter every step returns.

    `push` only keeps the step's counter (a device scalar); `judge` reads all kept counters in
    one transfer. The loop judges where it waits for the device anyway (log steps, checkpoint
    saves, the last step), so this adds no host sync of its own (reading every step's counter,
    even one step late, cost 6-13% of the tiny recipe's step time on a 2-core CPU; this way,
    nothing measurable).

    Args:
        limit: the run length to report (`train.rollback_after`, > 0).
        skipped: the train state's counter before the first step pushed.
    """

    def __init__(self, limit: int, skipped: int):
        self.limit, self.last, self.in_a_row = int(limit), int(skipped), 0
        self._pending: list[tuple[int, jax.Array]] = []

    def push(self, step: int, skipped: jax.Array) -> None:
        """Keeps the counter after step `step` (not read yet)."""
        self._pending.append((step, skipped))

    def judge(self) -> tuple[int, int] | None:
        """Reads the kept counters; returns (first, last) step of the first run of `limit`
        skipped updates among them, else None."""
        pending, self._pending = self._pending, []
        counts = jax.device_get([c for _, c in pending])
        for (step, _), count in zip(pending, counts):
            count = int(count)
            self.in_a_row = self.in_a_row + 1 if count > self.last else 0
            self.last = count
            if self.in_a_row >= self.limit:
                return step - self.in_a_row + 1, step
        return None


def rollback_target(first_bad: int, saved: list[int], rollbacks: int, max_rollbacks: int, what: str) -> int:
    """The checkpoint to roll back to after a run of non-finite steps from `first_bad`: the
    latest saved before that run (one saved during it holds the same parameters, but possibly an
    objective state the bad batches touched). Raises RuntimeError when there is none, or when
    `max_rollbacks` rollbacks have been used; `what` describes the run of steps."""
    good = [s for s in saved if s < first_bad]
    if not good:
        raise RuntimeError(
            f"{what}, and no checkpoint from before step {first_bad} to roll back to; lower optim.lr or raise "
            "optim.warmup_fraction (or save earlier with train.checkpoint_every)"
        )
    if rollbacks >= max_rollbacks:
        raise RuntimeError(
            f"{what}, after {rollbacks} rollback(s) (train.max_rollbacks={max_rollbacks}); the run keeps "
            "diverging: lower optim.lr or optim.clip_norm and rerun to resume from its latest checkpoint"
        )
    return max(good)


LOSS_FRAMES = "masked_frames"  # metrics key: frames the objective's loss averages over


def micro_weight(metrics: dict) -> jax.Array:
    """The weight of a micro-batch in gradient accumulation: the frames its loss averages over
    (`LOSS_FRAMES`), plus 1e-6 so that micro-batches without any count equally instead of
    dividing by zero; 1 for objectives that do not report it."""
    if LOSS_FRAMES not in metrics:
        return jnp.ones((), jnp.float32)
    return jnp.asarray(metrics[LOSS_FRAMES], jnp.float32) + 1e-6


def split_micro(x: jax.Array, k: int) -> jax.Array:
    """[batch, ...] -> [k, batch / k, ...]; micro-batch i holds rows i, i + k, i + 2k, ...

    Every device holds a contiguous block of the batch's rows (batch over data x fsdp), so each
    micro-batch takes rows from every device: every micro-step runs on all devices, where a plain
    reshape would give each micro-batch to a fraction of them (with batch / devices divisible by k).
    """
    y = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
    return sharding_lib.constrain(y, (None, "batch") + (None,) * (x.ndim - 1))


def join_micro(y: jax.Array) -> jax.Array:
    """The inverse of `split_micro`: [k, batch / k, ...] -> [batch, ...] in batch order."""
    return jnp.swapaxes(y, 0, 1).reshape(-1, *y.shape[2:])


def make_train_step(objective: Any, tx: optax.GradientTransformation, schedule: Callable, grad_accum: int) -> Callable:
    """`train_step(state, batch, rng) -> (state, metrics)`; a non-finite loss or gradient skips the update.

    The objective's non-gradient state goes into its loss and is advanced by its
    `update_state` after the update, inside the same jitted step.

    When the objective's metrics carry `optimizer.NO_GRADIENT` (parameters that got no gradient,
    e.g. layers LayerDrop skipped), those parameters and their optimizer moments are left as
    they were (`optimizer.hold`). With gradient accumulation a parameter is held only if every
    micro-batch marked it; one that got a gradient in some micro-batches is updated with the
    (frame-weighted) mean over all of them, zeros included, as a data-parallel all-reduce averages it.

    With gradient accumulation, micro-batches are weighted by the frames their loss averages
    over (`micro_weight`), so that a loss that is a mean over frames gets the gradient of the
    mean over the whole batch, short micro-batches counting for their frames only.
    """

    def loss_and_grad(params, objective_state, batch, rng, step):
        (loss, metrics), grads = jax.value_and_grad(objective.loss, has_aux=True)(
            params, batch, rng, step, True, objective_state
        )
        metrics = dict(metrics)
        no_gradient = metrics.pop(NO_GRADIENT, None)
        inputs = metrics.pop(STATE_INPUT, None)
        return (loss, metrics, grads), (no_gradient, inputs)

    def train_step(state: state_lib.TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        if grad_accum == 1:
            (loss, metrics, grads), (no_gradient, inputs) = loss_and_grad(
                state.params, state.objective_state, batch, rng, state.step
            )
        else:
            micro = jax.tree.map(lambda x: split_micro(x, grad_accum), batch)

            def body(carry, xs):
                i, mb = xs
                summed, no_grad, weight = carry
                out, (ng, inp) = loss_and_grad(state.params, state.objective_state, mb, jax.random.fold_in(rng, i), state.step)
                w = micro_weight(out[1])
                out = jax.tree.map(lambda x: x * w.astype(x.dtype), out)
                return (jax.tree.map(jnp.add, summed, out), jax.tree.map(jnp.logical_and, no_grad, ng), weight + w), inp

            shapes = jax.eval_shape(
                loss_and_grad, state.params, state.objective_state, jax.tree.map(lambda x: x[0], micro), rng, state.step
            )
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[0])
            all_true = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes[1][0])
            (total, no_gradient, weight), stacked = jax.lax.scan(
                body, (zeros, all_true, jnp.zeros((), jnp.float32)), (jnp.arange(grad_accum), micro)
            )
            loss, metrics, grads = jax.tree.map(lambda x: x / weight.astype(x.dtype), total)
            if LOSS_FRAMES in metrics:
                metrics[LOSS_FRAMES] = weight  # frames of the whole batch
            inputs = jax.tree.map(join_micro, stacked)  # back in batch order
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if no_gradient is not None:
            params, opt_state = hold(tx, no_gradient, (state.params, state.opt_state), (params, opt_state))
            updates = jax.tree.map(lambda h, u: jnp.where(h, jnp.zeros_like(u), u), no_gradient, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        params = keep(params, state.params)
        new_state = state_lib.TrainState(
            step=state.step + 1,
            params=params,
            opt_state=keep(opt_state, state.opt_state),
            skipped=state.skipped + (~finite).astype(jnp.int32),
            objective_state=objective.update_state(state.objective_state, params, state.step, inputs),
        )
        metrics = dict(metrics)
        metrics.update(
            loss=loss,
            grad_norm=grad_norm,
            param_norm=optax.tree.norm(state.params),
            update_norm=optax.tree.norm(updates),
            lr=schedule(state.step),
            skipped=new_state.skipped.astype(jnp.float32),
        )
        return new_state, metrics

    return train_step


def abstract_batch(host_batch: dict, global_rows: int, mesh, rules, length: int | None = None) -> dict:
    """`jax.ShapeDtypeStruct`s of the global device batch a host batch becomes (`shard_batch`),
    its sample axis set to `length` when given."""
    out = {}
    for k, v in host_batch.items():
        shape = (global_rows, *(v.shape[1:] if length is None else (length, *v.shape[2:])))
        out[k] = jax.ShapeDtypeStruct(shape, v.dtype, sharding=sharding_lib.batch_sharding(mesh, v.ndim, rules))
    return out


def bucket_batches(host_batch: dict, batches: Any, config: Any, mesh, rules) -> list[dict]:
    """The abstract train batch of every bucket length the iterator can yield (keys and dtypes
    from `host_batch`, one batch it yielded)."""
    host_batch = {k: np.asarray(host_batch[k]) for k in BATCH_KEYS + OPTIONAL_KEYS if k in host_batch}
    lengths = getattr(getattr(batches, "plan", None), "buckets", None) or [host_batch["audio"].shape[1]]
    return [abstract_batch(host_batch, config.train.batch_size, mesh, rules, int(n)) for n in lengths]


def make_eval_step(objective: Any) -> Callable:
    """`eval_step((params, objective_state), batch, rng) -> metrics`: deterministic model, masks from `rng`."""

    def eval_step(variables, batch, rng):
        params, objective_state = variables
        loss, metrics = objective.loss(params, batch, rng, 10**9, False, objective_state)
        metrics = {k: v for k, v in metrics.items() if k not in (NO_GRADIENT, STATE_INPUT)}
        return dict(metrics, loss=loss)

    return eval_step


# ----------------------------------------------------------------------------- loop


@dataclasses.dataclass
class _Stop:
    """SIGTERM asks this process to stop. On a multi-process run every process must stop at the
    same step (one that saved and left would leave the others waiting in a collective), so
    `agreed` all-gathers the flags, and also honours JAX's preemption sync point; all processes
    call it after every step."""

    requested: bool = False

    def handler(self, signum, frame):  # noqa: ARG002
        self.requested = True

    def agreed(self, step: int) -> bool:
        preempted = processes.preemption_notice(step)
        return processes.any_process(self.requested) or preempted


def _audio_seconds(batch: dict) -> float:
    return float(batch["audio_mask"].sum()) / SAMPLE_RATE


def _mean_eval(eval_step: compiled_lib.CompiledSteps, variables: Any, batches: list[dict], mesh, key_for: Callable[[int], jax.Array]) -> dict:
    """Masked-frame-weighted mean of the eval metrics over fixed held-out batches."""
    sums: dict[str, float] = {}
    weight_total = 0.0
    for i, batch in enumerate(batches):
        key = key_for(i)
        device_batch = sharding_lib.shard_batch(batch, mesh)
        with jax.transfer_guard("disallow"):
            m = eval_step(variables, device_batch, key)
        m = jax.device_get(m)
        w = float(m[LOSS_FRAMES])
        weight_total += w
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v) * w
    return {k: v / max(weight_total, 1.0) for k, v in sums.items() if k != LOSS_FRAMES}


@dataclasses.dataclass
class RunStart:
    """Where a run starts: its checkpoints, the step and rollback count it resumes at, its data."""

    manager: ckpt_lib.CheckpointManager
    start_step: int
    rollbacks: int
    path: str  # the corpus folder
    batches: Iterator[dict]  # training batches, in the order of `rollbacks`
    held_out: list[dict]  # fixed eval batches


def open_run(config: Any, workdir: str) -> RunStart:
    """The checkpoints of `workdir` and the data in the order of the latest one's rollbacks."""
    manager = ckpt_lib.CheckpointManager(
        workdir, save_every=config.train.checkpoint_every, keep=config.train.keep_checkpoints
    )
    start_step = manager.latest_step() or 0
    rollbacks = manager.rollbacks(start_step) if start_step else 0
    path = shard_dir(config)
    batches = train_batches(config, path, rollbacks)
    if jax.process_count() > 1:
        log.info("process %d of %d reads %d of the %d utterances of every global batch", jax.process_index(),
                 jax.process_count(), config.train.batch_size // jax.process_count(), config.train.batch_size)
    held_out = eval_batches(config, path) if config.train.eval_batches > 0 else []
    return RunStart(manager, start_step, rollbacks, path, batches, held_out)


def micro_batch_rows(config: Any, mesh) -> int:
    """Rows of one micro-batch (`train.batch_size / train.grad_accum`), checked to split evenly
    over the mesh's batch axes."""
    batch_size, grad_accum = int(config.train.batch_size), int(config.train.grad_accum)
    if batch_size % grad_accum:
        raise ValueError(f"train.batch_size {batch_size} is not divisible by train.grad_accum {grad_accum}")
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if (batch_size // grad_accum) % shards:
        raise ValueError(
            f"train.batch_size {batch_size} / train.grad_accum {grad_accum} is not divisible by "
            f"mesh.data x mesh.fsdp = {shards}"
        )
    return batch_size // grad_accum


@dataclasses.dataclass
class Layout:
    """The train state's abstract form and shardings (from `jax.eval_shape`, nothing allocated)."""

    init: Callable[[jax.Array], Any]  # key -> boxed TrainState
    init_rng: jax.Array
    abstract: Any  # TrainState of ShapeDtypeStructs carrying their shardings
    shardings: Any  # TrainState of NamedShardings
    num_params: int


def state_layout(config: Any, objective: Any, tx: optax.GradientTransformation, mesh, rules, rows: int,
                 samples: int) -> Layout:
    """Abstract state -> shardings, for micro-batches of `rows` x `samples`."""
    init_batch = {
        "audio": jax.ShapeDtypeStruct((rows, samples), jnp.float32),
        "audio_mask": jax.ShapeDtypeStruct((rows, samples), jnp.bool_),
    }

    def init_boxed(key):
        batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in init_batch.items()}
        params = objective.init(key, batch)
        return state_lib.TrainState.create(params, tx, objective.init_state(jax.random.fold_in(key, 1), batch))

    init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
    abstract_boxed = jax.eval_shape(init_boxed, init_rng)
    shardings = sharding_lib.tree_shardings(abstract_boxed, mesh, rules)
    abstract = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), nn.unbox(abstract_boxed), shardings
    )
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract.params))
    return Layout(init_boxed, init_rng, abstract, shardings, int(num_params))


def init_or_restore(config: Any, objective: Any, tx: optax.GradientTransformation, layout: Layout,
                    run: RunStart) -> state_lib.TrainState:
    """The latest checkpoint's state (and data position), or a new state created sharded (warm-started
    from `train.init_from` when set)."""
    if run.start_step:
        restored = run.manager.restore(state_lib.as_dict(layout.abstract), run.start_step)
        run.batches.set_state(restored.data)
        log.info("resumed from %s at step %d", run.manager.directory, run.start_step)
        return state_lib.from_dict(restored.state)
    state = jax.jit(lambda k: nn.unbox(layout.init(k)), out_shardings=layout.shardings)(layout.init_rng)
    if config.train.get("init_from"):
        state = warm_start(state, config.train.init_from, tx, layout.shardings)
    return state.replace(objective_state=jax.jit(
        objective.start_state, out_shardings=layout.shardings.objective_state
    )(state.objective_state, state.params))


def compile_steps(config: Any, objective: Any, tx: optax.GradientTransformation, schedule: Callable, mesh, rules,
                  shardings: Any) -> tuple[compiled_lib.CompiledSteps, compiled_lib.CompiledSteps]:
    """(train_step, eval_step), compiled per batch shape on first use or `precompile`."""
    replicated = sharding_lib.replicated(mesh)
    batch_in = lambda b: sharding_lib.batch_shardings(b, mesh, rules)  # noqa: E731
    train_step = compiled_lib.CompiledSteps(
        sharding_lib.activations_on(make_train_step(objective, tx, schedule, int(config.train.grad_accum)), mesh, rules),
        lambda b: (shardings, batch_in(b), replicated),
        (shardings, replicated),
        donate=(0,),
    )
    eval_step = compiled_lib.CompiledSteps(
        sharding_lib.activations_on(make_eval_step(objective), mesh, rules),
        lambda b: ((shardings.params, shardings.objective_state), batch_in(b), replicated),
        replicated,
    )
    return train_step, eval_step


class Run:
    """A run in progress: the state a step advances and a rollback replaces (state, data order,
    step key, metric log), its evaluations, and the loop."""

    def __init__(self, config: Any, workdir: str, start: RunStart, state: state_lib.TrainState, layout: Layout,
                 objective: Any, mesh, rules, steps: tuple[compiled_lib.CompiledSteps, compiled_lib.CompiledSteps]):
        self.config, self.workdir, self.objective, self.mesh, self.rules = config, workdir, objective, mesh, rules
        self.manager, self.path, self.held_out, self.layout = start.manager, start.path, start.held_out, layout
        self.state, self.batches, self.rollbacks = state, start.batches, start.rollbacks
        self.train_step, self.eval_step = steps
        self.is_main = jax.process_index() == 0
        # Step and eval keys are made on the mesh, replicated: every process holds the same key.
        self.key_on_mesh = jax.jit(
            lambda stream, i: jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), stream), i),
            out_shardings=sharding_lib.replicated(mesh),
        )
        self.step_rng = self.key_on_mesh(1, self.rollbacks)  # a rollback draws new masks too
        self.logger = MetricLogger(workdir, resume_step=start.start_step, enabled=self.is_main)
        self.probe = abx_probe.from_config(config)
        self.evals: list[dict] = []
        self.rolled_back: list[dict] = []
        self.rollback_after = int(config.train.get("rollback_after", 3))
        self.max_rollbacks = int(config.train.get("max_rollbacks", 3))
        self.non_finite = self._streak()
        total = int(config.train.steps)
        self.collapse = CollapseMonitor(
            objective.floors,
            start_step=int(float(config.optim.get("warmup_fraction", 0.0)) * total),
            patience=int(config.train.get("collapse_patience", 0)),
        )
        from ssl_jax.data.pipeline import UnreadableGuard

        self.unreadable = UnreadableGuard(float(config.data.get("max_unreadable_fraction", 0.05)))

    def _streak(self) -> NonFiniteStreak | None:
        if self.rollback_after <= 0:
            return None
        return NonFiniteStreak(self.rollback_after, int(jax.device_get(self.state.skipped)))

    def precompile(self, first_batch: dict | None) -> None:
        """Compiles every bucket shape's train step and the eval step before the first step."""
        if first_batch is not None:
            self.train_step.precompile([
                (self.state, b, self.step_rng)
                for b in bucket_batches(first_batch, self.batches, self.config, self.mesh, self.rules)
            ])
        variables = (self.state.params, self.state.objective_state)
        self.eval_step.precompile([
            (variables, abstract_batch(b, self.config.train.batch_size, self.mesh, self.rules), self.step_rng)
            for b in self.held_out
        ])

    def evaluate(self, step: int) -> None:
        """Held-out objective metrics and the ABX probe, logged with the prefix `eval_`."""
        if not self.held_out and self.probe is None:
            return
        variables = (self.state.params, self.state.objective_state)
        m = {}
        if self.held_out:
            m = _mean_eval(self.eval_step, variables, self.held_out, self.mesh, lambda i: self.key_on_mesh(2, i))
        if self.probe is not None:
            m.update(self.probe(self.state.params["encoder"]))
        self.evals.append({"step": step, **m})
        self.logger.log(step, m, prefix="eval_")
        log.info("eval step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in m.items() if not k.startswith("abx_word_l")))

    def roll_back(self, first: int, last: int) -> int:
        """Restores the checkpoint from before steps `first`..`last` (all skipped) and goes on with
        the data order of the next seed; returns the step restored."""
        what = (f"steps {first}-{last}: {last - first + 1} non-finite updates in a row "
                f"(train.rollback_after={self.rollback_after})")
        self.manager.wait()
        target = rollback_target(first, self.manager.all_steps(), self.rollbacks, self.max_rollbacks, what)
        dropped = self.manager.delete_after(target)  # the abandoned steps' checkpoints: a resume must not take them
        restored = self.manager.restore(state_lib.as_dict(self.layout.abstract), target)
        self.state = state_lib.from_dict(restored.state)
        self.rollbacks += 1
        if hasattr(self.batches, "close"):
            self.batches.close()  # its worker processes, if any
        self.batches = train_batches(self.config, self.path, self.rollbacks)
        self.batches.set_state(restored.data)
        self.step_rng = self.key_on_mesh(1, self.rollbacks)
        self.logger.close()
        self.logger = MetricLogger(self.workdir, resume_step=target, enabled=self.is_main)  # metrics.jsonl follows the kept run
        self.evals[:] = [e for e in self.evals if e["step"] <= target]
        self.non_finite = self._streak()
        self.rolled_back.append({"steps": [first, last], "to": target})
        log.warning(
            "%s: rolled back to the checkpoint of step %d (rollback %d of at most %d, train.max_rollbacks; "
            "deleted later checkpoints %s); data order and step keys now from seed %d + %d",
            what, target, self.rollbacks, self.max_rollbacks, dropped, self.config.seed, self.rollbacks,
        )
        return target

    def save(self, step: int, force: bool = False) -> None:
        self.manager.save(step, state_lib.as_dict(self.state), self.batches.get_state(), self.config,
                          force=force, rollbacks=self.rollbacks)

    def loop(self, step: int, first_batch: dict | None, stop_after: int | None, progress: bool) -> dict:
        """Steps from `step` to `train.steps` (or a stop: SIGTERM, preemption, collapse,
        `stop_after`); logs, evaluates, checkpoints and rolls back on the way. Returns the
        facts the summary reports: steps, stopped_early, last_metrics (the last logged), collapsed."""
        config, total_steps = self.config, int(self.config.train.steps)
        stop = _Stop()
        previous = signal.signal(signal.SIGTERM, stop.handler) if _main_thread() else None
        bar = None
        if progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True, mininterval=1.0)
        last_log_time, last_log_step, audio_since_log = time.time(), step, 0.0
        stopped_early, last_metrics, collapsed = False, {}, None
        try:
            while step < total_steps:
                if first_batch is not None:
                    host_batch, first_batch = first_batch, None
                else:
                    host_batch = next(self.batches)
                self.unreadable.update(host_batch)
                batch = {k: np.asarray(host_batch[k]) for k in BATCH_KEYS + OPTIONAL_KEYS if k in host_batch}
                audio_since_log += _audio_seconds(batch) * jax.process_count()
                device_batch = sharding_lib.shard_batch(batch, self.mesh, self.rules)
                with jax.transfer_guard("disallow"):
                    self.state, metrics = self.train_step(self.state, device_batch, self.step_rng)
                step += 1
                if bar is not None:
                    bar.update(1)
                if self.non_finite is not None:
                    self.non_finite.push(step, metrics["skipped"])
                    judged = step % config.train.log_every == 0 or step % config.train.checkpoint_every == 0
                    bad = self.non_finite.judge() if judged or step == total_steps else None
                    if bad is not None:
                        step = self.roll_back(*bad)
                        last_log_time, last_log_step, audio_since_log = time.time(), step, 0.0
                        if bar is not None:
                            bar.n = step
                            bar.refresh()
                        continue
                if step % config.train.log_every == 0 or step == total_steps:
                    metrics = jax.device_get(metrics)
                    now = time.time()
                    metrics["step_time"] = (now - last_log_time) / max(step - last_log_step, 1)
                    metrics["audio_seconds_per_second"] = audio_since_log / max(now - last_log_time, 1e-9)
                    last_log_time, last_log_step, audio_since_log = now, step, 0.0
                    last_metrics = self.logger.log(step, metrics)
                    collapsed = self.collapse.check(metrics, step)
                    if bar is not None:
                        # The objective's first summary metric beside the loss (unless it is the loss).
                        shown = {k: f"{metrics[k]:.3g}" for k in list(self.objective.SUMMARY)[:1]
                                 if k in metrics and k != "loss"}
                        bar.set_postfix({"loss": f"{metrics['loss']:.3f}", **shown})
                if config.train.eval_every and step % config.train.eval_every == 0 and step < total_steps:
                    self.evaluate(step)
                if step % config.train.checkpoint_every == 0:
                    self.save(step)
                elif step % config.train.log_every == 0 and processes.any_process(self.manager.failed()):
                    self.manager.wait()  # a background save failed (a full disk): CheckpointSaveError, one line
                if collapsed:
                    log.error("stopping: %s", collapsed)
                signalled = stop.agreed(step)
                if signalled:
                    log.info("stopping at step %d: SIGTERM or preemption notice (agreed by all %d processes)",
                             step, jax.process_count())
                if signalled or collapsed or (stop_after is not None and step >= stop_after):
                    stopped_early = step < total_steps
                    break
        finally:
            if bar is not None:
                bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return {"steps": step, "stopped_early": stopped_early, "last_metrics": last_metrics, "collapsed": collapsed}

    def finish(self, step: int, stopped_early: bool) -> None:
        """The final checkpoint and, after a complete run, the final evaluation."""
        self.save(step, force=True)
        self.manager.close()
        if not stopped_early and (not self.evals or self.evals[-1]["step"] != step):
            self.evaluate(step)
        self.logger.close()


def train(config: Any, workdir: str, *, stop_after: int | None = None, progress: bool = True) -> dict:
    """Pretrains `config` in `workdir` (resuming from its latest checkpoint).

    Args:
        config: the full ConfigDict.
        workdir: run folder (checkpoints/, tensorboard/, metrics.jsonl, summary.json).
        stop_after: stop (saving a checkpoint) after this global step, as a SIGTERM would.
        progress: show a tqdm progress bar with ETA.
    Returns:
        The summary dict (also written to `workdir/summary.json`).
    """
    t_start = time.time()
    os.makedirs(workdir, exist_ok=True)

    # Data, in the order of the latest checkpoint's rollbacks (`train_batches`).
    start = open_run(config, workdir)

    # Mesh, objective, optimizer.
    mesh = mesh_lib.make_mesh(config.mesh)
    rules = sharding_lib.DEFAULT_RULES
    sharding_lib.check_model(config.model, mesh)
    objective = objectives.build(config)
    objective.prepare(start.path, workdir)
    total_steps = int(config.train.steps)
    tx, schedule = make_optimizer(config.optim, total_steps)
    rows = micro_batch_rows(config, mesh)

    # Abstract state -> shardings -> state created sharded (never whole on one device), or restored.
    plan = getattr(start.batches, "plan", None)
    samples = max(int(b) for b in plan.buckets) if plan is not None else int(config.data.max_seconds * SAMPLE_RATE)
    layout = state_layout(config, objective, tx, mesh, rules, rows, samples)
    # The persistent compilation cache from here on, so the state's initialisation is cached too.
    cache_dir = compiled_lib.use_persistent_cache(str(config.train.get("compilation_cache", "")))
    state = init_or_restore(config, objective, tx, layout, start)

    # Compiled steps: every bucket shape, before the first step.
    steps = compile_steps(config, objective, tx, schedule, mesh, rules, layout.shardings)
    run = Run(config, workdir, start, state, layout, objective, mesh, rules, steps)
    first_batch = next(run.batches) if start.start_step < total_steps else None  # the first step's batch
    run.precompile(first_batch)
    processes.barrier("ssl_jax_compiled")  # a process whose programs came from the cache waits for the others
    train_step, eval_step = steps
    log.info(
        "compiled %d programs at start-up in %.1f s; %d found in the persistent compilation cache (%s)",
        train_step.count + eval_step.count, train_step.compile_seconds + eval_step.compile_seconds,
        train_step.cache_hits + eval_step.cache_hits, cache_dir or "off",
    )

    # The loop, then the final checkpoint and evaluation.
    if start.start_step == 0:
        run.evaluate(0)
    end = run.loop(start.start_step, first_batch, stop_after, progress)
    step = end["steps"]
    run.finish(step, end["stopped_early"])

    summary = {
        "workdir": os.path.abspath(workdir),
        "steps": step,
        "resumed_from": start.start_step,
        "stopped_early": end["stopped_early"],
        "wall_seconds": time.time() - t_start,
        "compiles": train_step.count + eval_step.count,
        "train_compiles": train_step.count,
        "late_compiles": train_step.late + eval_step.late,
        "compile_seconds": train_step.compile_seconds + eval_step.compile_seconds,
        "compilation_cache": {
            "dir": cache_dir,
            "hits": train_step.cache_hits + eval_step.cache_hits,
            "writes": train_step.cache_writes + eval_step.cache_writes,
        },
        "programs": {
            f"{fn.name} {dict(key)}": facts for fn in steps for key, facts in fn.facts.items()
        },
        "skipped_updates": int(jax.device_get(run.state.skipped)),
        "rollbacks": run.rollbacks,
        "rolled_back": run.rolled_back,
        "unreadable_records": run.unreadable.unreadable,
        "collapse_warnings": run.collapse.warnings,
        "stopped_for_collapse": end["collapsed"],
        "num_params": layout.num_params,
        "devices": jax.device_count(),
        "mesh": dict(zip(mesh_lib.AXES, (mesh.shape[a] for a in mesh_lib.AXES))),
        "final_loss": end["last_metrics"].get("loss"),
        "summary_metrics": dict(objective.SUMMARY),
        "init_from": config.train.get("init_from") or None,
        "eval_start": run.evals[0] if run.evals else None,
        "eval_end": run.evals[-1] if run.evals else None,
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return summary


def warm_start(state: state_lib.TrainState, path: str, tx: optax.GradientTransformation, shardings: Any) -> state_lib.TrainState:
    """`state` with the parameters of the checkpoint at `path` (`training.warm_start`) and a
    fresh optimizer state for them."""
    from ssl_jax.training import warm_start as warm_lib

    host = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)
    merged = warm_lib.load(path, host)
    params = jax.tree.map(
        lambda new, old, sh: jax.device_put(new, sh) if isinstance(new, np.ndarray) else old,
        merged.params,
        state.params,
        shardings.params,
        is_leaf=lambda x: isinstance(x, (np.ndarray, jax.ShapeDtypeStruct)),
    )
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return state.replace(params=params, opt_state=opt_state)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def format_summary(summary: dict) -> str:
    """A short human-readable end-of-run summary."""
    lines = [
        f"steps {summary['steps']} (resumed from {summary['resumed_from']})"
        + (" - stopped early, checkpoint saved" if summary["stopped_early"] else ""),
        f"wall time {summary['wall_seconds']:.0f}s, {summary['compiles']} programs "
        f"({summary['train_compiles']} train-step shapes, {summary['compile_seconds']:.0f}s compiling, "
        f"{summary['compilation_cache']['hits']} from the persistent cache, {summary['late_compiles']} compiled mid-run)",
        f"params {summary['num_params']:,} on {summary['devices']} device(s), mesh {summary['mesh']}",
        f"skipped non-finite updates: {summary['skipped_updates']}"
        + (f", rollbacks: {summary['rollbacks']}" if summary.get("rollbacks") else ""),
        f"collapse warnings: {summary['collapse_warnings']}"
        + (f" - stopped: {summary['stopped_for_collapse']}" if summary.get("stopped_for_collapse") else ""),
    ]
    if summary.get("final_loss") is not None:
        lines.append(f"final train loss {summary['final_loss']:.4f}")
    if summary.get("init_from"):
        lines.append(f"warm start from {summary['init_from']}")
    labels = summary.get("summary_metrics") or {}
    for name in ("eval_start", "eval_end"):
        e = summary.get(name)
        if e:
            shown = [f"{label} {e[k]:.4g}" for k, label in labels.items() if k in e]
            if "loss" in e:
                shown.append(f"loss {e['loss']:.3f}")
            lines.append(f"{name.replace('_', ' ')} (step {e['step']}): " + ", ".join(shown))
    lines.append(f"workdir {summary['workdir']} (metrics.jsonl, tensorboard/, checkpoints/)")
    return "\n".join(lines)
