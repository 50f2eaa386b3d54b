"""Tests for ssl_jax/training/loop.py: non-finite updates are skipped, and a run of them rolls the
run back; parameters without gradient are held; a full disk stops the run with one line."""

import errno
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import config_dict

from ssl_jax import objectives
from ssl_jax.objectives import STATE_INPUT, Objective
from ssl_jax.parallel import mesh as mesh_lib
from ssl_jax.parallel import sharding as sharding_lib
from ssl_jax.training import checkpoint as ckpt_lib
from ssl_jax.training import loop
from ssl_jax.training.logging import read_metrics
from ssl_jax.training.optimizer import NO_GRADIENT, make_optimizer
from ssl_jax.training.state import TrainState
from tests.helpers import tiny_config, tones


def test_non_finite_loss_skips_update_and_counts():
    cfg = tiny_config(frontend="logmel")  # the skip is the step's, not the front end's; log-mel compiles faster
    obj = objectives.build(cfg)
    good = {"audio": jnp.asarray(tones(2, 3200)), "audio_mask": jnp.ones((2, 3200), bool)}
    bad = dict(good, audio=good["audio"].at[0, 100].set(jnp.nan))
    cfg.optim.warmup_fraction = 0.0
    tx, schedule = make_optimizer(cfg.optim, 10)
    state = TrainState.create(nn.unbox(obj.init(jax.random.key(0), good)), tx)
    step = jax.jit(loop.make_train_step(obj, tx, schedule, grad_accum=2))
    s1, m1 = step(state, bad, jax.random.key(1))
    assert int(s1.skipped) == 1 and int(s1.step) == 1 and not np.isfinite(float(m1["loss"]))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), s1.params, state.params)
    s2, m2 = step(s1, good, jax.random.key(1))
    assert int(s2.skipped) == 1 and np.isfinite(float(m2["loss"]))
    assert not np.array_equal(np.asarray(s2.params["project_q"]["kernel"]), np.asarray(state.params["project_q"]["kernel"]))


class _Cusp(Objective):
    """Loss sum(cbrt(w - x)): finite everywhere, with an infinite gradient where w == x."""

    def loss(self, params, batch, rng, step, train=True, state=None):
        return jnp.sum(jnp.cbrt(params["w"] - batch["x"])), {"masked_frames": jnp.ones(())}


def test_finite_loss_with_infinite_gradient_skips_update():
    tx, schedule = make_optimizer({"lr": 0.1, "warmup_fraction": 0.0, "schedule": "constant", "b1": 0.9,
                                   "b2": 0.98, "eps": 1e-6, "weight_decay": 0.0, "clip_norm": 1.0}, 10)
    state = TrainState.create({"w": jnp.ones((3,))}, tx)
    step = jax.jit(loop.make_train_step(_Cusp(), tx, schedule, grad_accum=1))
    s1, m1 = step(state, {"x": jnp.array([1.0, 0.0, 0.0])}, jax.random.key(0))
    assert np.isfinite(float(m1["loss"])) and not np.isfinite(float(m1["grad_norm"]))
    assert int(s1.skipped) == 1
    _same(s1.params, state.params)
    _same(s1.opt_state, state.opt_state)  # moments and count untouched too
    s2, m2 = step(s1, {"x": jnp.zeros(3)}, jax.random.key(0))
    assert int(s2.skipped) == 1 and np.isfinite(float(m2["grad_norm"])) and _moved(s2.params["w"], s1.params["w"])


def _adam(opt_state) -> optax.ScaleByAdamState:
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)]
    assert len(found) == 1
    return found[0]


def _layers(tree) -> dict:
    return {k: v for k, v in tree["encoder"]["encoder"].items() if k.startswith("layers_")}


def _same(a, b) -> None:
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _moved(a, b) -> bool:
    return not np.array_equal(np.asarray(a), np.asarray(b))


def test_dropped_layers_keep_params_and_moments_on_a_sharded_mesh():
    cfg = tiny_config(frontend="logmel")  # the hold concerns the Transformer; log-mel compiles faster
    cfg.optim.warmup_fraction = 0.0
    cfg.optim.weight_decay = 0.1  # without the hold, decay alone would move a dropped layer
    tx, schedule = make_optimizer(cfg.optim, 10)
    batch = {"audio": jnp.asarray(tones(8, 3200)), "audio_mask": jnp.ones((8, 3200), bool)}
    mesh = mesh_lib.make_mesh(config_dict.ConfigDict({"data": 2, "fsdp": 2, "tensor": 1}), jax.devices()[:4])
    dropping = objectives.build(tiny_config(frontend="logmel", layerdrop=1.0))
    boxed = jax.eval_shape(lambda k: TrainState.create(dropping.init(k, batch), tx), jax.random.key(0))
    shardings = sharding_lib.tree_shardings(boxed, mesh)
    state = jax.jit(lambda k: nn.unbox(TrainState.create(dropping.init(k, batch), tx)), out_shardings=shardings)(
        jax.random.key(0)
    )
    batch = sharding_lib.shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh)
    rep = sharding_lib.replicated(mesh)

    # Moments away from zero (as after earlier steps), so that a decayed moment would show.
    adam = _adam(state.opt_state)
    moved = adam._replace(mu=jax.tree.map(lambda x: x + 0.01, adam.mu), nu=jax.tree.map(lambda x: x + 1e-4, adam.nu))
    s1 = state.replace(opt_state=jax.tree.map(lambda x: moved if x is adam else x, state.opt_state,
                                              is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)))

    # With gradient accumulation, the harder path: the hold must survive the micro-batch sum.
    step = jax.jit(
        loop.make_train_step(dropping, tx, schedule, grad_accum=2),
        in_shardings=(shardings, sharding_lib.batch_shardings(batch, mesh), rep),
        out_shardings=(shardings, rep),
    )
    s2, m2 = step(s1, batch, jax.random.key(2))
    assert NO_GRADIENT not in m2 and float(m2["dropped_layers"]) == dropping.encoder_config.num_layers
    assert int(s2.step) == 1 and int(s2.skipped) == 0
    _same(_layers(s2.params), _layers(s1.params))
    for moment in ("mu", "nu"):
        _same(_layers(getattr(_adam(s2.opt_state), moment)), _layers(getattr(_adam(s1.opt_state), moment)))
    # Everything outside the Transformer layers still trains.
    assert _moved(s2.params["project_q"]["kernel"], s1.params["project_q"]["kernel"])
    assert _moved(s2.params["encoder"]["encoder"]["pos_conv"]["bias"], s1.params["encoder"]["encoder"]["pos_conv"]["bias"])
    assert _moved(_adam(s2.opt_state).mu["project_q"]["kernel"], _adam(s1.opt_state).mu["project_q"]["kernel"])
    assert s2.params["project_q"]["kernel"].sharding == s1.params["project_q"]["kernel"].sharding


class _Toy(Objective):
    """A linear objective whose `b` is used only by rows flagged `use_b`: a micro-batch without
    such rows gives `b` no gradient and says so under NO_GRADIENT."""

    def loss(self, params, batch, rng, step, train=True, state=None):
        x, use = batch["x"], batch["use_b"]
        loss = jnp.mean((x @ params["a"]) ** 2) + jnp.sum(jnp.where(use, (x @ params["b"]) ** 2, 0.0))
        return loss, {"toy": loss, NO_GRADIENT: {"a": jnp.zeros((), bool), "b": ~jnp.any(use)}}


def test_accumulation_holds_only_what_every_micro_batch_left_without_gradient():
    optim = {"lr": 1e-2, "warmup_fraction": 0.0, "schedule": "constant", "b1": 0.9, "b2": 0.98, "eps": 1e-6,
             "weight_decay": 0.1, "clip_norm": 0.0}
    tx, schedule = make_optimizer(optim, 10)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32)
    state = TrainState.create({"a": jnp.ones((3, 2)), "b": jnp.ones((3, 2))}, tx)
    step = jax.jit(loop.make_train_step(_Toy(), tx, schedule, grad_accum=2))
    s1, m1 = step(state, {"x": x, "use_b": jnp.ones(4, bool)}, jax.random.key(0))
    assert set(m1) >= {"toy", "loss"} and NO_GRADIENT not in m1
    assert _moved(s1.params["b"], state.params["b"])
    # Only the first micro-batch (rows 0 and 2) uses b: it is updated, with the mean gradient.
    s2, _ = step(s1, {"x": x, "use_b": jnp.array([True, False, False, False])}, jax.random.key(0))
    assert _moved(s2.params["b"], s1.params["b"]) and _moved(_adam(s2.opt_state).mu["b"], _adam(s1.opt_state).mu["b"])
    # No micro-batch uses b: b, its moments, are held while a moves on.
    s3, _ = step(s2, {"x": x, "use_b": jnp.zeros(4, bool)}, jax.random.key(0))
    _same(s3.params["b"], s2.params["b"])
    _same((_adam(s3.opt_state).mu["b"], _adam(s3.opt_state).nu["b"]), (_adam(s2.opt_state).mu["b"], _adam(s2.opt_state).nu["b"]))
    assert _moved(s3.params["a"], s2.params["a"]) and int(_adam(s3.opt_state).count) == 3


class _Teacher(Objective):
    """Pulls `w` towards a non-gradient EMA copy of itself that the step updates."""

    def init_state(self, rng, batch):
        return {"ema": jnp.zeros((3,)), "seen": jnp.zeros((2, 3))}

    def loss(self, params, batch, rng, step, train=True, state=None):
        loss = jnp.sum((params["w"] - state["ema"] - batch["x"].mean(0)) ** 2)
        return loss, {"masked_frames": jnp.ones(()), STATE_INPUT: batch["x"]}

    def update_state(self, state, params, step, inputs=None):
        return {"ema": 0.5 * state["ema"] + 0.5 * params["w"], "seen": inputs}


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_objective_state_goes_into_the_loss_and_is_updated_inside_the_step(grad_accum):
    optim = {"lr": 0.1, "warmup_fraction": 0.0, "schedule": "constant", "b1": 0.0, "b2": 0.98, "eps": 1e-6,
             "weight_decay": 0.0, "clip_norm": 0.0}
    tx, schedule = make_optimizer(optim, 10)
    obj = _Teacher()
    batch = {"x": jnp.asarray([[0.5, 0.5, 0.5], [1.5, 1.5, 1.5]])}
    state = TrainState.create({"w": jnp.zeros((3,))}, tx, obj.init_state(None, batch))
    step = jax.jit(loop.make_train_step(obj, tx, schedule, grad_accum))
    ema = np.zeros(3)
    for _ in range(3):
        before = np.asarray(state.params["w"])
        grad = 2 * (before - ema - 1.0)
        state, metrics = step(state, batch, jax.random.key(0))
        assert not np.allclose(np.asarray(state.params["w"]), before)
        assert np.all(np.sign(np.asarray(state.params["w"]) - before) == -np.sign(grad))  # gradient saw the state
        ema = 0.5 * ema + 0.5 * np.asarray(state.params["w"])
        np.testing.assert_allclose(np.asarray(state.objective_state["ema"]), ema, rtol=1e-6)
        # What the loss handed over reaches update_state whole and in batch order, not the metrics.
        np.testing.assert_array_equal(np.asarray(state.objective_state["seen"]), np.asarray(batch["x"]))
        assert STATE_INPUT not in metrics


class _FrameMean(Objective):
    """A loss that is a mean over the valid frames (rows) of the batch."""

    def loss(self, params, batch, rng, step, train=True, state=None):
        m = batch["valid"].astype(jnp.float32)
        per_frame = (batch["x"] @ params["w"]) ** 2
        frames = m.sum()
        return (per_frame * m).sum() / jnp.maximum(frames, 1.0), {"masked_frames": frames}


def test_gradient_accumulation_weights_micro_batches_by_their_frames():
    optim = {"lr": 0.1, "warmup_fraction": 0.0, "schedule": "constant", "b1": 0.0, "b2": 0.98, "eps": 1.0,
             "weight_decay": 0.0, "clip_norm": 0.0}  # large eps: the update is not scale-free
    tx, schedule = make_optimizer(optim, 10)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32)
    batch = {"x": x, "valid": jnp.array([True, False, True, True])}  # micro-batches (rows 0, 2; 1, 3): 2 frames, then 1
    state = TrainState.create({"w": jnp.ones((3,))}, tx)
    whole, m1 = jax.jit(loop.make_train_step(_FrameMean(), tx, schedule, 1))(state, batch, jax.random.key(0))
    accum, m2 = jax.jit(loop.make_train_step(_FrameMean(), tx, schedule, 2))(state, batch, jax.random.key(0))
    np.testing.assert_allclose(np.asarray(accum.params["w"]), np.asarray(whole.params["w"]), rtol=1e-5)
    np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-5)
    assert float(m2["masked_frames"]) == pytest.approx(3.0)


def test_collapse_monitor_warns_after_warmup_and_stops_after_patience(caplog):
    mon = loop.CollapseMonitor({"perplexity": 4.0, "accuracy": 0.1}, start_step=10, patience=2)
    assert mon.check({"perplexity": 1.0}, 5) is None and mon.warnings == 0  # warm-up
    assert mon.check({"perplexity": 1.0, "accuracy": 0.5}, 10) is None and mon.warnings == 1
    assert mon.check({"perplexity": 8.0, "accuracy": 0.5}, 11) is None  # recovered: the count restarts
    assert mon.check({"accuracy": 0.05}, 12) is None
    reason = mon.check({"accuracy": 0.05}, 13)
    assert reason and "accuracy 0.05 < 0.1" in reason and "train.collapse_patience" in reason
    assert "possible collapse" in caplog.text
    assert loop.CollapseMonitor({"accuracy": 0.1}, 0).check({"accuracy": 0.0}, 99) is None  # warn only


def test_every_contrastive_and_masked_objective_monitors_chance():
    # wav2vec 2.0: chance is 1 / (1 + distractors); its codebook perplexity is watched too.
    obj = objectives.build(tiny_config())
    assert obj.floors["accuracy"] == pytest.approx(1.5 / (1 + obj.num_negatives))
    assert obj.floors["perplexity"] == 2.0 * obj.encoder_config.num_codevector_groups
    batch = {"audio": jnp.asarray(tones(2, 3200)), "audio_mask": jnp.ones((2, 3200), bool)}
    params = nn.unbox(obj.init(jax.random.key(0), batch))
    _, metrics = obj.loss(params, batch, jax.random.key(1), 0, False)
    assert set(obj.floors) <= set(metrics)


def test_non_finite_streak_finds_runs_across_judgements():
    watch = loop.NonFiniteStreak(limit=2, skipped=5)  # 5 skipped before this run (a resume)
    for step, count in {1: 5, 2: 6, 3: 6, 4: 7}.items():  # steps 2 and 4 skipped
        watch.push(step, jnp.asarray(float(count)))
    assert watch.judge() is None and watch.in_a_row == 1
    assert watch.judge() is None  # nothing new
    watch.push(5, jnp.asarray(8.0))  # step 5 skipped: 4-5 in a row, across two judgements
    watch.push(6, jnp.asarray(9.0))
    assert watch.judge() == (4, 5)
    once = loop.NonFiniteStreak(limit=1, skipped=0)
    once.push(9, jnp.asarray(1.0))
    assert once.judge() == (9, 9)


def test_rollback_target_is_the_last_checkpoint_before_the_bad_steps():
    assert loop.rollback_target(7, [2, 4, 6, 8], 0, 3, "steps 7-9") == 6  # 8 was saved during the bad run
    with pytest.raises(RuntimeError, match=r"steps 1-3, and no checkpoint from before step 1 to roll back to"):
        loop.rollback_target(1, [2], 0, 3, "steps 1-3")
    with pytest.raises(RuntimeError, match=r"steps 7-9, after 2 rollback\(s\) \(train.max_rollbacks=2\)"):
        loop.rollback_target(7, [4], 2, 2, "steps 7-9")


class _Poisoned:
    """A training iterator whose batches at the stream positions `bad` get a NaN sample, which
    makes the loss non-finite (a bad stretch of data in one data order)."""

    def __init__(self, it, bad):
        self.it, self.bad, self.plan = it, bad, it.plan

    def __iter__(self):
        return self

    def __next__(self):
        position = self.it.get_state()["next_index"]
        batch = next(self.it)
        if position in self.bad:
            batch = dict(batch, audio=batch["audio"].copy())
            batch["audio"][0, 100] = np.nan
        return batch

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)

    def close(self):
        self.it.close()


def _run_config(corpus: str, cache: str):
    c = tiny_config(frontend="logmel")  # the loop is under test; log-mel compiles faster
    c.data.path = corpus
    c.data.max_seconds, c.data.min_seconds, c.data.num_buckets = 1.0, 0.5, 1
    c.train.steps, c.train.batch_size, c.train.log_every = 8, 8, 1
    c.train.eval_every, c.train.eval_batches, c.train.checkpoint_every = 0, 0, 2
    c.train.rollback_after, c.train.max_rollbacks = 2, 1
    c.train.compilation_cache = cache
    return c


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla"))


def _poison(monkeypatch, bad_for_offset):
    real = loop.train_batches

    def poisoned(config, path, seed_offset=0):
        return _Poisoned(real(config, path, seed_offset), bad_for_offset(seed_offset))

    monkeypatch.setattr(loop, "train_batches", poisoned)


def test_non_finite_steps_in_a_row_roll_back_to_the_checkpoint_with_a_new_data_order(
    tiny_corpus, xla_cache, tmp_path, monkeypatch, caplog
):
    # The batches of steps 6 and 7 are bad in the first data order only; step 6 is saved (one bad
    # step is no run yet), the run is found at step 7.
    _poison(monkeypatch, lambda offset: {5, 6} if offset == 0 else set())
    workdir = str(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger=loop.__name__):
        summary = loop.train(_run_config(tiny_corpus, xla_cache), workdir, progress=False)
    assert summary["rollbacks"] == 1 and summary["rolled_back"] == [{"steps": [6, 7], "to": 4}]
    assert summary["steps"] == 8 and summary["skipped_updates"] == 0  # the kept run never skipped
    assert "steps 6-7: 2 non-finite updates in a row" in caplog.text
    assert "rolled back to the checkpoint of step 4" in caplog.text and "deleted later checkpoints [6]" in caplog.text
    # metrics.jsonl follows the kept run: every step once, in order, finite.
    records = [r for r in read_metrics(workdir) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert all(r["loss"] is not None and np.isfinite(r["loss"]) for r in records)
    state, _ = ckpt_lib.load_state(workdir)
    assert int(state["step"]) == 8
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
    # The checkpoint of step 6 saved during the bad steps was replaced by the kept run's, which
    # carries the new data order, as the one of step 8 does: a resume continues the kept run.
    manager = ckpt_lib.CheckpointManager(workdir)
    assert manager.all_steps()[-2:] == [6, 8] and manager.rollbacks(6) == manager.rollbacks(8) == 1


def test_rollbacks_are_capped_by_max_rollbacks(tiny_corpus, xla_cache, tmp_path, monkeypatch):
    _poison(monkeypatch, lambda offset: set(range(4, 100)))  # bad from step 5 on, in every data order
    with pytest.raises(RuntimeError, match=r"steps 5-6: 2 non-finite updates in a row .*after 1 rollback\(s\) "
                                           r"\(train.max_rollbacks=1\)"):
        loop.train(_run_config(tiny_corpus, xla_cache), str(tmp_path / "run"), progress=False)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_last_checkpoint(tiny_corpus, xla_cache, tmp_path,
                                                                             monkeypatch):
    from orbax.checkpoint import handlers

    real = handlers.JsonCheckpointHandler._save_fn

    async def full_from_step_4(self, x, directory):
        # directory: <workdir>/checkpoints/<step>.orbax-checkpoint-tmp.../<item>.orbax-checkpoint-tmp...
        if int(directory.parent.name.split(".")[0]) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory / "metadata"))
        return await real(self, x, directory)

    monkeypatch.setattr(handlers.JsonCheckpointHandler, "_save_fn", full_from_step_4)
    workdir = tmp_path / "run"
    with pytest.raises(ckpt_lib.CheckpointSaveError) as info:
        loop.train(_run_config(tiny_corpus, xla_cache), str(workdir), progress=False)
    message = str(info.value)
    assert "\n" not in message and info.value.errno == errno.ENOSPC
    assert f"step 4 under {workdir}: no space left on device" in message and "step 2 is intact" in message
    assert not (workdir / "summary.json").exists()
    monkeypatch.undo()
    assert ckpt_lib.CheckpointManager(str(workdir)).latest_step() == 2
    state, _ = ckpt_lib.load_state(str(workdir))
    assert int(state["step"]) == 2
