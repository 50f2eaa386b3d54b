"""Tests for ssl_jax/models/quantizers.py."""

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.quantizers import GumbelVectorQuantizer


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
