"""Tests for ssl_jax/training/loop.py: non-finite updates are skipped; parameters without gradient are held."""

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
from ssl_jax.training import loop
from ssl_jax.training.optimizer import NO_GRADIENT, make_optimizer
from ssl_jax.training.state import TrainState
from tests.helpers import tiny_config, tones


def test_non_finite_loss_skips_update_and_counts():
    cfg = tiny_config()
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
    plain = objectives.build(cfg)
    dropping = objectives.build(tiny_config(frontend="logmel", layerdrop=1.0))
    boxed = jax.eval_shape(lambda k: TrainState.create(plain.init(k, batch), tx), jax.random.key(0))
    shardings = sharding_lib.tree_shardings(boxed, mesh)
    state = jax.jit(lambda k: nn.unbox(TrainState.create(plain.init(k, batch), tx)), out_shardings=shardings)(
        jax.random.key(0)
    )
    batch = sharding_lib.shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh)
    rep = sharding_lib.replicated(mesh)

    def compiled(obj, accum):
        return jax.jit(
            loop.make_train_step(obj, tx, schedule, accum),
            in_shardings=(shardings, sharding_lib.batch_shardings(batch, mesh), rep),
            out_shardings=(shardings, rep),
        )

    # LayerDrop off: nothing is held, every layer and its moments move.
    s1, m1 = compiled(plain, 1)(state, batch, jax.random.key(1))
    assert NO_GRADIENT not in m1 and "dropped_layers" not in m1
    assert all(_moved(a, b) for a, b in zip(jax.tree.leaves(_layers(s1.params)), jax.tree.leaves(_layers(state.params))))

    for accum in (1, 2):
        s2, m2 = compiled(dropping, accum)(s1, batch, jax.random.key(2))
        assert NO_GRADIENT not in m2 and float(m2["dropped_layers"]) == dropping.encoder_config.num_layers
        assert int(s2.step) == 2 and int(s2.skipped) == 0
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
