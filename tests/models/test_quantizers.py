"""Tests for ssl_jax/models/quantizers.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.quantizers import GumbelVectorQuantizer, VectorQuantizer


def _setup():
    q = GumbelVectorQuantizer(num_groups=2, num_vars=5, codevector_dim=6)
    feats = jax.random.normal(jax.random.key(0), (3, 7, 4))
    mask = jnp.arange(7)[None] < jnp.array([[7], [5], [0]])
    p = q.init(jax.random.key(1), feats, mask)
    return q, p, feats, mask


def test_hard_codes_are_codebook_entries():
    q, p, feats, mask = _setup()
    out, ppl = q.apply(p, feats, mask)
    assert out.shape == (3, 7, 6)
    cb = np.asarray(p["params"]["codevectors"].unbox()).reshape(2, 5, 3)
    w = p["params"]["weight_proj"]
    logits = feats @ w["kernel"].unbox() + w["bias"].unbox()
    idx = np.asarray(logits).reshape(3, 7, 2, 5).argmax(-1)
    expect = np.concatenate([cb[0][idx[..., 0]], cb[1][idx[..., 1]]], axis=-1)
    np.testing.assert_allclose(out, expect, atol=1e-6)
    # Soft perplexity over valid frames only, summed over groups.
    probs = np.asarray(jax.nn.softmax(np.asarray(logits).reshape(3, 7, 2, 5), -1))
    valid = np.asarray(mask)
    marg = probs[valid].mean(0)
    ref = np.exp(-(marg * np.log(marg + 1e-7)).sum(-1)).sum()
    np.testing.assert_allclose(ppl, ref, rtol=1e-5)
    assert 2.0 <= float(ppl) <= 10.0


def test_gumbel_is_random_straight_through():
    q, p, feats, mask = _setup()
    a, _ = q.apply(p, feats, mask, temperature=2.0, deterministic=False, rngs={"gumbel": jax.random.key(2)})
    b, _ = q.apply(p, feats, mask, temperature=2.0, deterministic=False, rngs={"gumbel": jax.random.key(3)})
    assert not np.allclose(a, b)
    # Each output is still one codebook entry per group.
    cb = np.asarray(p["params"]["codevectors"].unbox()).reshape(2, 5, 3)
    for grp in range(2):
        part = np.asarray(a)[..., grp * 3:(grp + 1) * 3].reshape(-1, 3)
        d = np.abs(part[:, None, :] - cb[grp][None]).sum(-1).min(-1)
        assert d.max() < 1e-5
    # Gradients reach the projection through the soft relaxation.
    g = jax.grad(
        lambda pp: q.apply(pp, feats, mask, temperature=2.0, deterministic=False, rngs={"gumbel": jax.random.key(2)})[0].sum()
    )(p)
    assert float(jnp.abs(g["params"]["weight_proj"]["kernel"].unbox()).sum()) > 0


def test_uniform_logits_give_full_perplexity():
    q, p, feats, mask = _setup()
    p = jax.tree.map(jnp.zeros_like, p)
    _, ppl = q.apply(p, feats, mask)
    np.testing.assert_allclose(ppl, 10.0, rtol=1e-4)


def test_perplexity_counts_only_marked_frames():
    q, p, feats, mask = _setup()
    marked = mask & (jnp.arange(7)[None] % 2 == 0)
    _, ppl = q.apply(p, feats, marked)
    # Whatever the unmarked frames hold, the perplexity stays; they are still quantised.
    other = jnp.where(marked[..., None], feats, 5.0 * jax.random.normal(jax.random.key(7), feats.shape))
    out, ppl_other = q.apply(p, other, marked)
    np.testing.assert_allclose(ppl_other, ppl, rtol=1e-6)
    _, ppl_all = q.apply(p, feats, mask)
    assert abs(float(ppl_all) - float(ppl)) > 1e-3
    assert out.shape == (3, 7, 6)
    # No marked frame: one code per group is as informative as any, perplexity G.
    _, ppl_none = q.apply(p, feats, jnp.zeros_like(mask))
    np.testing.assert_allclose(ppl_none, 2.0, rtol=1e-6)


def _vq_setup():
    q = VectorQuantizer(num_codes=6, code_dim=3)
    z = 0.7 * jax.random.normal(jax.random.key(0), (3, 7, 3))
    mask = jnp.arange(7)[None] < jnp.array([[7], [4], [0]])
    p = q.init(jax.random.key(1), z, mask)
    return q, p, z, mask


def test_vq_codes_are_the_nearest_entries_and_losses_count_valid_frames():
    q, p, z, mask = _vq_setup()
    out, codes, cb_loss, commit_loss, ppl = q.apply(p, z, mask)
    cb = np.asarray(p["params"]["codebook"].unbox())
    zn, valid = np.asarray(z), np.asarray(mask)
    nearest = ((zn[:, :, None, :] - cb[None, None]) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(np.asarray(codes), np.where(valid, nearest, -1))
    np.testing.assert_allclose(np.asarray(out), np.where(valid[..., None], cb[nearest], 0.0), atol=1e-6)
    mse = ((zn - cb[nearest]) ** 2)[valid].mean()
    np.testing.assert_allclose(cb_loss, mse, rtol=1e-5)
    np.testing.assert_allclose(commit_loss, mse, rtol=1e-5)
    hist = np.bincount(nearest[valid], minlength=6) / valid.sum()
    nz = hist[hist > 0]
    np.testing.assert_allclose(ppl, np.exp(-(nz * np.log(nz)).sum()), rtol=1e-5)
    # Padded frames change nothing; no valid frame gives zero losses and perplexity 1.
    moved = q.apply(p, jnp.where(mask[..., None], z, 9.0), mask)
    for a, b in zip(moved[2:], (cb_loss, commit_loss, ppl)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    empty = q.apply(p, z, jnp.zeros_like(mask))
    assert float(empty[2]) == 0.0 and float(empty[4]) == 1.0 and (np.asarray(empty[1]) == -1).all()


def test_vq_straight_through_and_loss_gradients():
    q, p, z, mask = _vq_setup()
    w = jax.random.normal(jax.random.key(3), z.shape)
    # The gradient of any function of the output reaches z unchanged (on valid frames).
    g_z = jax.grad(lambda zz: (q.apply(p, zz, mask)[0] * w).sum())(z)
    np.testing.assert_allclose(g_z, np.where(np.asarray(mask)[..., None], w, 0.0), atol=1e-6)
    g_cb = jax.grad(lambda pp: (q.apply(pp, z, mask)[0] * w).sum())(p)["params"]["codebook"].unbox()
    assert float(jnp.abs(g_cb).max()) == 0.0
    # The codebook loss moves the codebook only; the commitment loss moves z only.
    g_p, g_zc = jax.grad(lambda pp, zz: q.apply(pp, zz, mask)[2], argnums=(0, 1))(p, z)
    assert float(jnp.abs(g_p["params"]["codebook"].unbox()).max()) > 0 and float(jnp.abs(g_zc).max()) == 0.0
    g_p, g_zc = jax.grad(lambda pp, zz: q.apply(pp, zz, mask)[3], argnums=(0, 1))(p, z)
    assert float(jnp.abs(g_p["params"]["codebook"].unbox()).max()) == 0.0 and float(jnp.abs(g_zc).max()) > 0


def test_vq_rejects_a_wrong_width():
    q, p, z, mask = _vq_setup()
    with pytest.raises(ValueError, match="width 3"):
        q.apply(p, jnp.zeros((1, 2, 4)), jnp.ones((1, 2), bool))
