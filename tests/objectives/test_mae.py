"""Tests for ssl_jax/objectives/mae.py: the loss counts masked patches only against per-patch
standardised targets, the encoder sees visible patches only, the eval loss ignores padding,
the collapse floor, and reconstruction from context on one batch, then Upstream on the
trained encoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import objectives
from ssl_jax.models import patch_encoder
from ssl_jax.objectives.m2d import split_patches, standardize
from ssl_jax.objectives.mae import reconstruction_loss
from ssl_jax.training.config_check import load_config_file
from tests.objectives import ema_helpers
from tests.helpers import ROOT

LENGTHS = [8000, 8000, 7000, 6000]


def mae_config(**objective):
    c = load_config_file(f"{ROOT}/configs/mae_tiny.py")
    c.model.update(patch_freq=16, patch_time=4, dim=32, num_layers=1, num_heads=2, intermediate_size=64)
    c.objective.decoder.update(dim=16, num_layers=1, num_heads=2, intermediate_size=32)
    c.objective.update(**objective)
    return c


def chords(num: int, samples: int, seed: int = 0, parts: int = 16) -> np.ndarray:
    """Steady chords, a different one per utterance: every masked patch can be filled in from
    the visible patches of its band (the piecewise tones of `tests.helpers.tones` change pitch
    every patch, so their masked patches cannot)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    out = []
    for _ in range(num):
        f = np.exp(rng.uniform(np.log(100.0), np.log(7500.0), parts))[:, None]
        a = rng.uniform(0.2, 1.0, parts)[:, None] / np.sqrt(parts)
        x = (a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (parts, 1)))).sum(0)
        out.append(x + 0.002 * rng.standard_normal(samples))
    return np.stack(out).astype(np.float32)


def batch_of(x, lengths):
    return {"audio": jnp.asarray(x), "audio_mask": jnp.asarray(np.arange(x.shape[1])[None] < np.asarray(lengths)[:, None])}


@pytest.fixture(scope="module")
def setup():
    """(objective, batch, params) shared by the tests: one batch shape, one compile of each op."""
    obj = objectives.build(mae_config())
    batch = batch_of(chords(4, 8000, seed=4), LENGTHS)
    params = jax.jit(lambda k, b: nn.unbox(obj.init(k, b)))(jax.random.key(0), batch)
    return obj, batch, params


@pytest.fixture(scope="module")
def eval_metrics(setup):
    """Jitted eval (loss, metrics) of (params, batch) with a fixed key."""
    obj = setup[0]
    return jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(5), 0, False, {}))


@pytest.fixture(scope="module")
def split(setup):
    obj, batch, _ = setup
    patches, valid = obj.patches(batch)
    return patches, split_patches(jax.random.key(0), valid, patches.shape[1], obj.mask_ratio)


def selected(shape, index, ok):
    """bool[batch, num_patches, 1]: the patches at `index` where `ok`."""
    sel = np.zeros(shape[:2], bool)
    for b in range(shape[0]):
        sel[b, np.asarray(index[b])[np.asarray(ok[b])]] = True
    return jnp.asarray(sel)[..., None]


def test_loss_counts_masked_patches_against_per_patch_standardised_targets(split):
    patches, s = split
    rng = np.random.default_rng(0)
    pred = jnp.asarray(rng.standard_normal(s["masked_index"].shape + (patches.shape[2],)), jnp.float32)
    loss = reconstruction_loss  # a few small ops: eager is quicker than compiling them
    base, err, _ = loss(pred, patches, s, True)
    # A reference over the masked valid patches, each standardised by its own mean and std.
    p, w = np.asarray(patches), np.asarray(s["masked_valid"])
    errs = []
    for b in range(p.shape[0]):
        for j in np.flatnonzero(w[b]):
            x = p[b, int(s["masked_index"][b, j])]
            t = (x - x.mean()) / np.sqrt(x.var() + 1e-6)
            errs.append(np.mean((np.asarray(pred[b, j]) - t) ** 2))
    np.testing.assert_allclose(float(base), np.mean(errs), rtol=1e-5)
    assert float(np.abs(np.asarray(err)[~w]).max()) == 0.0
    # Visible patches are not targets; an affine change of a masked patch's values is invisible
    # to its standardised target, but not to a raw one.
    vis = selected(patches.shape, s["visible_index"], s["visible_valid"])
    msk = selected(patches.shape, s["masked_index"], s["masked_valid"])
    np.testing.assert_allclose(float(loss(pred, jnp.where(vis, patches * 5.0 + 2.0, patches), s, True)[0]), float(base), rtol=1e-6)
    np.testing.assert_allclose(float(loss(pred, jnp.where(msk, patches * 3.0 - 1.0, patches), s, True)[0]), float(base), rtol=1e-4)
    assert abs(float(loss(pred, jnp.where(msk, patches + 1.0, patches), s, False)[0]) - float(loss(pred, patches, s, False)[0])) > 0.1
    assert float(loss(pred, jnp.where(msk, jnp.flip(patches, -1), patches), s, True)[0]) != pytest.approx(float(base), rel=1e-3)


def test_encoder_sees_only_visible_patches(setup, split):
    obj, _, params = setup
    patches, s = split
    assert jax.eval_shape(obj.forward, params, patches, s).shape == (4, s["masked_index"].shape[1], obj.model.patch_dim)
    encode = jax.jit(lambda x: obj.encoder.apply({"params": params["encoder"]}, x, s["visible_index"], s["visible_valid"],
                                                 method=patch_encoder.Encoder.encode_patches)[1:])
    vis = selected(patches.shape, s["visible_index"], s["visible_valid"])
    msk = selected(patches.shape, s["masked_index"], s["masked_valid"])
    ok = np.asarray(s["visible_valid"])
    out, cls = encode(patches)
    new_masked = encode(jnp.where(msk, patches + 3.0, patches))
    new_visible = encode(jnp.where(vis, patches + 3.0, patches))
    np.testing.assert_allclose(np.asarray(new_masked[0])[ok], np.asarray(out)[ok], atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_masked[1]), np.asarray(cls), atol=1e-5)
    assert np.abs(np.asarray(new_visible[0] - out)[ok]).max() > 1e-3


def test_eval_loss_is_deterministic_and_padding_free(setup, eval_metrics):
    obj, batch, params = setup
    a = eval_metrics(params, batch)
    b = eval_metrics(params, dict(batch, audio=batch["audio"].at[3, 6000:].set(4.0).at[2, 7000:].set(-2.0)))
    np.testing.assert_allclose(float(a[0]), float(b[0]), rtol=1e-6)
    counts = [int(obj.model.frame_lengths(np.array([n]))[0]) * obj.model.freq_patches for n in LENGTHS]
    assert float(a[1]["masked_frames"]) == sum(n - int(n * 0.3 + 1e-4) for n in counts)
    assert float(a[1]["masked_fraction"]) == pytest.approx(float(a[1]["masked_frames"]) / sum(counts))


def test_a_decoder_that_outputs_one_patch_is_under_the_floor(setup, eval_metrics):
    obj, batch, params = setup
    assert obj.floors == {"pred_std": 0.01}
    flat = jax.tree.map(lambda x: x, params)
    flat["decoder"]["project"]["kernel"] = jnp.zeros_like(flat["decoder"]["project"]["kernel"])
    assert float(eval_metrics(flat, batch)[1]["pred_std"]) < obj.floors["pred_std"]
    assert float(eval_metrics(params, batch)[1]["pred_std"]) > obj.floors["pred_std"]


def test_tiny_mae_learns_to_fill_in_from_context_and_embeds(setup, split):
    from ssl_jax.upstream import Upstream

    obj, batch, _ = setup
    params, _, hist = ema_helpers.train(obj, batch, steps=60, lr=1e-2)
    first, last = float(hist[0]["loss"]), float(np.mean([m["loss"] for m in hist[-5:]]))
    assert last < 0.5 * first, (first, last)
    # Below the best context-free guess (each band's mean standardised patch over the batch):
    # the reconstructions use the visible patches of their own utterance.
    t, n = np.asarray(standardize(split[0])), obj.model.frame_lengths(np.asarray(LENGTHS)) * obj.model.freq_patches
    t = np.concatenate([t[b, : n[b]] for b in range(len(n))]).reshape(-1, obj.model.freq_patches, t.shape[-1])
    assert last < float(np.square(t - t.mean(0)).mean()), last
    assert float(hist[-1]["pred_std"]) > obj.floors["pred_std"]
    up = Upstream(params["encoder"], obj.config.model, min_samples=8000)
    feats = up.embed([np.asarray(batch["audio"][3, :6000])], batch_size=1)[0]
    assert feats.shape == (2, int(obj.model.frame_lengths(np.array([6000]))[0]), 5 * 32) and np.isfinite(feats).all()


def test_needs_the_patch_encoder_and_valid_settings():
    c = load_config_file(f"{ROOT}/configs/mae_tiny.py")
    c.model = load_config_file(f"{ROOT}/configs/w2v2_tiny.py").model
    with pytest.raises(ValueError, match="architecture='patches'"):
        objectives.build(c)
    with pytest.raises(ValueError, match="mask_ratio"):
        objectives.build(mae_config(mask_ratio=0.0))
    c = mae_config()
    c.objective.decoder.num_heads = 3
    with pytest.raises(ValueError, match="decoder.dim"):
        objectives.build(c)
