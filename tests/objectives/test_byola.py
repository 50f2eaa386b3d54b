"""Tests for ssl_jax/objectives/byola.py and ssl_jax/models/audio_cnn.py (BYOL-A)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from ssl_jax import objectives
from ssl_jax.models import audio_cnn
from ssl_jax.models.encoder import config_from
from ssl_jax.objectives import STATE_INPUT
from ssl_jax.training.config_check import load_config_file
from ssl_jax.upstream import Upstream
from tests.objectives import ema_helpers
from tests.helpers import ROOT, tones


def byola_config(version: int = 2):
    """configs/byola_tiny.py shrunk: 32 bins, 8 channels, 32-frame segments."""
    c = load_config_file(os.path.join(ROOT, "configs", "byola_tiny.py"))
    c.train.abx_probe.speakers = 0
    c.model.update(version=version, logmel_bins=32, conv_channels=8, mlp_hidden=32, dropout=0.0)
    c.model.hidden_size = 96 if version == 2 else 64  # conv features: 8 channels x 8 bins = 64
    c.objective.update(crop_frames=32, projector_hidden=64, projection_dim=32)
    c.objective.augment.bank_size = 8
    return c


@pytest.fixture(scope="module")
def obj():
    """One objective for the module, so its compiled initialisation is shared."""
    return objectives.build(byola_config())


def _batch(num=4, samples=8000, seed=0):
    return {"audio": jnp.asarray(tones(num, samples, seed=seed)), "audio_mask": jnp.ones((num, samples), bool)}


@pytest.fixture(scope="module")
def started(obj):
    """(params, state) of `obj` as a fresh run starts them (`obj.init` compiles once and is reused)."""
    batch = _batch()
    params = nn.unbox(obj.init(jax.random.key(0), batch))
    return params, obj.start_state(nn.unbox(obj.init_state(jax.random.key(1), batch)), params)


def test_config_contract_and_errors():
    c = byola_config()
    cfg = config_from(c.model)
    assert isinstance(cfg, audio_cnn.Config) and cfg.num_layers == 2 and cfg.hidden_size == 96
    assert cfg.downsampling == 320 and audio_cnn.Config.from_config(cfg.to_dict()) == cfg
    n = np.array([400, 16000, 16001, 3000])
    expect = ((n - 400) // 160 + 1) // 2
    np.testing.assert_array_equal(cfg.frame_lengths(n), expect)
    np.testing.assert_array_equal(np.asarray(cfg.frame_lengths(jnp.asarray(n))), expect)
    with pytest.raises(ValueError, match="valid keys"):
        audio_cnn.Config.from_config(dict(c.model.to_dict(), num_heads=4))
    with pytest.raises(ValueError, match="hidden_size"):
        audio_cnn.Config(version=2, logmel_bins=32, conv_channels=8, time_pool=(2, 1), mlp_hidden=64, hidden_size=96)
    with pytest.raises(ValueError, match="logmel"):
        audio_cnn.Config(frontend="conv")
    bad = byola_config()
    bad.model = load_config_file(os.path.join(ROOT, "configs", "w2v2_tiny.py")).model
    with pytest.raises(ValueError, match="audio_cnn"):
        objectives.build(bad)
    objectives.build(load_config_file(os.path.join(ROOT, "configs", "byola_base.py:v1")))


def test_version_1_stages_are_padded_to_the_hidden_size():
    c = byola_config(version=1)
    obj = objectives.build(c)
    params = jax.eval_shape(lambda: ema_helpers.start(obj, _batch())[0])
    out = jax.eval_shape(lambda p, x: obj.encoder.apply({"params": p}, x, jnp.ones(x.shape[:2], bool), method="encode"),
                         params["encoder"], jax.ShapeDtypeStruct((2, 32, 32), jnp.float32))
    assert [h.shape for h in out.hidden_states] == [(2, 16, 64)] * 3 and out.pooled.shape == (2, 64)
    assert out.features.shape == (2, 16, 64)


def test_upstream_embeds_frames_independent_of_padding(obj, started):
    params, _ = started
    up = Upstream(params["encoder"], obj.config.model)
    assert up.pooling == "mean+max"  # utterance probes pool the way the clip embedding does
    assert up.num_hidden_states == 3 and up.frame_rate == 50.0
    waves = [tones(1, 6000, seed=1)[0], tones(1, 11000, seed=2)[0]]
    alone = up.embed(waves[:1], batch_size=2)[0]
    both = up.embed(waves, batch_size=2)
    assert up.num_compiles == 1
    assert alone.shape == (3, int(obj.encoder_config.frame_lengths(6000)), 96)
    assert both[1].shape == (3, int(obj.encoder_config.frame_lengths(11000)), 96)
    np.testing.assert_allclose(both[0], alone, atol=1e-4)  # padded beside a longer utterance
    conv = alone[0][:, :64]
    np.testing.assert_array_equal(alone[0][:, 64:], 0.0)  # v2: conv features, then zeros
    np.testing.assert_allclose(alone[2][:, :64], conv, atol=1e-6)  # the output repeats them beside the MLP's
    assert np.abs(alone[2][:, 64:]).mean() > 0
    # pooled: temporal mean + max of the last hidden state over valid frames
    x = jnp.asarray(np.stack([np.pad(waves[0], (0, 5000)), waves[1]]))
    mask = jnp.asarray(np.arange(11000)[None] < np.array([[6000], [11000]]))
    out = jax.jit(lambda p, x, m: obj.encoder.apply({"params": p}, x, m))(params["encoder"], x, mask)
    assert out.pooled.shape == (2, 96)
    last = alone[-1]
    np.testing.assert_allclose(out.pooled[0], last.mean(0) + last.max(0), rtol=1e-4, atol=1e-4)


def _symbolic_zeros(fn, tree) -> dict:
    """Per leaf of `tree`: whether the gradient of `fn` at `tree` is a constant zero in its jaxpr
    (no path from the loss back to that leaf). Tracing only: nothing compiles."""
    jaxpr = jax.make_jaxpr(jax.grad(fn, allow_int=True))(tree).jaxpr
    producers = {v: e for e in jaxpr.eqns for v in e.outvars}

    def literal_zero(v):
        if not isinstance(v, jcore.Literal):
            return False
        return v.aval.dtype == jax.dtypes.float0 or bool(np.all(np.asarray(v.val) == 0))

    def zero(v):
        if isinstance(v, jcore.Literal):
            return literal_zero(v)
        e = producers.get(v)
        return e is not None and e.primitive.name == "broadcast_in_dim" and all(map(literal_zero, e.invars))

    return jax.tree.unflatten(jax.tree.structure(tree), [zero(v) for v in jaxpr.outvars])


def test_teacher_gets_no_gradient_and_follows_the_ema_and_the_bank_is_fed(obj, started):
    batch = _batch()
    params, state = started
    key = jax.random.key(0)
    # The eval step's call (train=False); the same check on the student finds its gradient.
    teacher_zero = _symbolic_zeros(lambda s: obj.loss(params, batch, key, 0, False, s)[0], state)["teacher"]
    assert all(jax.tree.leaves(teacher_zero))
    student_zero = _symbolic_zeros(lambda p: obj.loss(p, batch, key, 0, False, state)[0], params)
    assert not any(jax.tree.leaves(student_zero["encoder"])) and not any(jax.tree.leaves(student_zero["predictor"]))
    _, m = jax.eval_shape(lambda p, s: obj.loss(p, batch, key, 0, False, s), params, state)
    assert m[STATE_INPUT]["segments"].shape == (4, 32, 32) and m["masked_frames"].shape == ()

    segments = jnp.asarray(np.random.default_rng(0).standard_normal((4, 32, 32)).astype(np.float32))
    moved = jax.tree.map(lambda p: p + 1.0, params)
    new = jax.jit(obj.update_state)(state, moved, 0, {"segments": segments})
    d = float(obj.ema(0))
    for k in ("encoder", "projector"):
        jax.tree.map(lambda t, old, p: np.testing.assert_allclose(t, d * old + (1 - d) * p, rtol=1e-6, atol=1e-6),
                     new["teacher"][k], state["teacher"][k], moved[k])
    assert "predictor" not in new["teacher"]
    assert int(new["bank_count"]) == 4
    np.testing.assert_array_equal(new["bank"][-4:], segments)


def test_tiny_byola_overfits_one_batch_without_collapse(obj):
    batch = _batch(num=8, samples=8000, seed=3)
    _, state, history = ema_helpers.train(obj, batch, steps=40, lr=3e-3)
    first = float(history[0]["loss"])
    late = history[-5:]
    assert np.mean([h["loss"] for h in late]) < 0.6 * first, (first, [h["loss"] for h in late])
    assert np.mean([h["cosine"] for h in late]) > 0.4
    for h in late:
        assert float(h["target_std"]) > obj.floors["target_std"] and float(h["pred_std"]) > obj.floors["pred_std"]
        assert float(h["frame_std"]) > 0.05
    assert int(state["bank_count"]) == 8 and float(late[-1]["bank_fill"]) == 8.0
