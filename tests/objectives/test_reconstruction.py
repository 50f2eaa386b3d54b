"""Tests for ssl_jax/objectives/reconstruction.py, mockingjay.py, tera.py and decoar2.py: the
alteration policies' statistics, padding never altered nor counted, the loss over the altered
entries only, DeCoAR 2.0's straight-through quantiser, and each objective fitting a batch."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax import objectives
from ssl_jax.objectives import reconstruction as rec
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tones

SAMPLES = 8000


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of the runs of True in a 1-D bool array."""
    d = np.diff(np.concatenate([[0], row.astype(int), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return list(zip(starts, ends - starts))


def small(name: str, **objective):
    """The tiny recipe shrunk: 1 Transformer layer of 32, 16 mel bins."""
    c = load_config_file(os.path.join(ROOT, "configs", f"{name}_tiny.py"))
    c.train.abx_probe.speakers = 0
    c.model.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, logmel_bins=16,
                   num_conv_pos_embedding_groups=4)
    c.objective.update(objective)
    return objectives.build(c)


def batch(num: int = 2) -> dict:
    """`num` utterances of tones, the second 3/4 long."""
    lengths = jnp.array([SAMPLES, 3 * SAMPLES // 4] + [SAMPLES] * (num - 2))
    return {"audio": jnp.asarray(tones(num, SAMPLES)), "audio_mask": jnp.arange(SAMPLES)[None] < lengths[:, None]}


def test_time_alteration_statistics_and_padding():
    lengths = np.array([400, 250, 37, 0] * 64)
    frames = 420
    mask = jnp.arange(frames)[None] < jnp.asarray(lengths)[:, None]
    x = jnp.where(mask[..., None], jax.random.normal(jax.random.key(0), (len(lengths), frames, 4)), 0.0)
    t = jax.jit(lambda k: rec.alter_time(k, x, mask, mask_prob=0.15, mask_length=7))(jax.random.key(1))
    out, chosen, action = np.asarray(t.x), np.asarray(t.chosen), np.asarray(t.action)
    x, valid = np.asarray(x), np.asarray(mask)
    assert not (chosen & ~valid).any() and (action[~valid] == rec.UNTOUCHED).all()
    np.testing.assert_array_equal(out[~valid], x[~valid])
    assert ((action != rec.UNTOUCHED) == chosen).all()
    # About 0.15 * 400 / 7 spans of 7 among 394 starts, overlaps allowed: 1 - (1 - 7/394)^8.6 = 14%.
    frac = chosen[lengths == 400].mean() / (400 / frames)
    assert 0.125 < frac < 0.155, frac
    for row, a in zip(chosen, action):
        runs = _runs(row)
        assert all(n >= 7 for _, n in runs), "a span shorter than mask_length"
        assert all(len(set(a[s:s + n])) == 1 for s, n in runs if n == 7), "a lone span mixes actions"
    share = {k: (action[chosen] == k).mean() for k in (rec.ZEROED, rec.RANDOM, rec.KEPT)}
    assert abs(share[rec.ZEROED] - 0.8) < 0.04, share
    assert abs(share[rec.RANDOM] - 0.1) < 0.03 and abs(share[rec.KEPT] - 0.1) < 0.03, share
    assert (out[action == rec.ZEROED] == 0).all()
    kept = (action == rec.KEPT) | (action == rec.UNTOUCHED)
    np.testing.assert_array_equal(out[kept], x[kept])
    # A replaced frame is a copy of a valid frame of the same utterance.
    rows, cols = np.nonzero(action == rec.RANDOM)
    same = (x[rows] == out[rows, cols][:, None, :]).all(-1) & valid[rows]  # [replaced, source frame]
    assert len(rows) and same.any(-1).all()


def test_frequency_band_widths_and_noise_share():
    band = np.asarray(jax.jit(rec.frequency_band, static_argnums=(1, 2, 3, 4))(jax.random.key(0), 4000, 80, 2, 0.2))
    first, second = band[:, :80], band[:, 80:]
    np.testing.assert_array_equal(first, second)  # every stacked slot alike
    widths = first.sum(-1)
    assert widths.min() == 0 and widths.max() == 16 and set(widths.tolist()) == set(range(17))
    assert abs(widths.mean() - 8.0) < 0.4, widths.mean()
    edges = np.abs(np.diff(first.astype(int), axis=-1, prepend=0, append=0)).sum(-1)
    assert (edges <= 2).all(), "a band of non-adjacent bins"
    starts = first.argmax(-1)[widths > 0]
    assert starts.min() == 0 and (starts + widths[widths > 0]).max() == 80

    mask = jnp.arange(50)[None] < jnp.asarray(np.tile([50, 20], 1000))[:, None]
    x = jnp.zeros((2000, 50, 8))
    out, noisy = jax.jit(lambda k: rec.add_noise(k, x, mask, prob=0.1, std=0.2))(jax.random.key(1))
    out, noisy, valid = np.asarray(out), np.asarray(noisy), np.asarray(mask)
    assert abs(noisy.mean() - 0.1) < 0.02, noisy.mean()
    assert (out[~valid] == 0).all() and (out[~noisy] == 0).all()
    on = out[noisy][valid[noisy]]
    assert abs(on.std() - 0.2) < 0.01 and (on != 0).all()


# Per objective: the settings of the tests below and the learning rate that fits a batch. TERA:
# wide bands and noise on every utterance, so that one draw shows every alteration. DeCoAR 2.0:
# short spans, so that masked frames can be told apart by their neighbours, and no diversity
# term, so that the encoder's gradient can only come through the quantiser's codes.
SETTINGS = {
    "mockingjay": ({}, 3e-3),
    "tera": (dict(freq_mask_fraction=0.5, noise_prob=1.0), 3e-3),
    "decoar2": (dict(mask_length=3, mask_prob=0.3, vq_codes=32, gumbel_temperature=(2.0, 0.5, 1.0),
                     diversity_weight=0.0), 1e-2),
}


@pytest.fixture(scope="module")
def built():
    """name -> (objective, batch, initial params), each built once."""
    cache = {}

    def get(name):
        if name not in cache:
            obj, b = small(name, **SETTINGS[name][0]), batch()
            cache[name] = obj, b, jax.jit(lambda k, b: nn.unbox(obj.init(k, b)))(jax.random.key(0), b)
        return cache[name]

    return get


def test_loss_counts_altered_valid_entries_only(built):
    obj, b, params = built("tera")
    key = jax.random.key(3)
    run = jax.jit(lambda p, b: (obj.reconstruct(p, b, key, 0, False)[0], *obj.loss(p, b, key, 0, False)))
    r, loss, metrics = run(params, b)
    weight, chosen, valid = np.asarray(r.weight), np.asarray(r.chosen), np.asarray(r.frame_mask)
    assert not valid[1].all() and not weight[~valid].any() and not chosen[~valid].any()
    # Whole chosen frames, plus one band of bins over every valid frame of each utterance.
    assert (weight[chosen]).all()
    band = weight & ~chosen[..., None]
    assert band.any()
    for u in range(2):
        rows = band[u][valid[u] & ~chosen[u]]
        assert (rows == rows[0]).all() and len(_runs(rows[0])) <= 1
    np.testing.assert_allclose(float(loss), float(rec.masked_l1(r.pred, r.target, r.weight)), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["masked_frames"]), weight.sum() / weight.shape[-1], rtol=1e-6)
    # A different target where nothing was altered leaves the loss; at an altered entry it moves it.
    moved = jnp.where(r.weight, r.target, r.target + 5.0)
    assert float(rec.masked_l1(r.pred, moved, r.weight)) == pytest.approx(float(loss), rel=1e-6)
    one = np.zeros(weight.shape, bool)
    one[tuple(np.argwhere(weight)[0])] = True
    assert float(rec.masked_l1(r.pred, jnp.where(one, r.target + 5.0, r.target), r.weight)) > float(loss) + 1e-4
    # Padding: garbage beyond each utterance's samples changes nothing in the eval loss.
    garbage = dict(b, audio=jnp.where(b["audio_mask"], b["audio"], 7.0))
    _, loss2, metrics2 = run(params, garbage)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
    assert float(metrics2["masked_frames"]) == float(metrics["masked_frames"])


def test_config_errors():
    with pytest.raises(ValueError, match="log-mel"):
        c = load_config_file(os.path.join(ROOT, "configs", "tera_tiny.py"))
        c.model.frontend = "conv"
        objectives.build(c)
    with pytest.raises(ValueError, match="zero_prob"):
        small("mockingjay", zero_prob=0.95)
    with pytest.raises(ValueError, match="vq_groups"):
        small("decoar2", vq_groups=3)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_objective_fits_a_batch(name, built):
    """Under one fixed alteration (the step key), 40 Adam steps at least halve the L1; the
    encoder gets a gradient from the first step (for DeCoAR 2.0: through the straight-through
    codes, as the head reads nothing else)."""
    obj, b, params = built(name)
    tx = optax.adam(SETTINGS[name][1])
    key = jax.random.key(1)

    @jax.jit
    def step(p, s, i):
        (_, m), g = jax.value_and_grad(obj.loss, has_aux=True)(p, b, key, i, True)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, m["l1"], optax.tree.norm(g["encoder"])

    state, history = tx.init(params), []
    for i in range(40):
        params, state, l1, encoder_grad = step(params, state, i)
        history.append(float(l1))
        if i == 0:
            assert np.isfinite(float(encoder_grad)) and float(encoder_grad) > 1e-4, float(encoder_grad)
    assert np.isfinite(history).all() and min(history[-5:]) < 0.5 * history[0], history
