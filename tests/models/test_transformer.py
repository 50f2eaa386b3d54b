"""Tests for ssl_jax/models/transformer.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.encoder import EncoderConfig
from ssl_jax.models.transformer import LAYERDROP_COLLECTION, LAYERS_KEPT, TransformerEncoder, dropped_layers_mask

BASE = EncoderConfig(
    conv_dim=(8,) * 7, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32,
    num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, layerdrop=0.5,
)


def _run(cfg, x, mask, **kw):
    mod = TransformerEncoder(cfg)
    p = mod.init(jax.random.key(0), x, mask)
    return mod, p, mod.apply(p, x, mask, **kw)


@pytest.mark.parametrize(
    "changes",
    [{}, {"layer_norm_first": True}, {"relative_position_buckets": 8, "relative_position_max_distance": 20},
     {"num_pos_conv_layers": 3, "num_conv_pos_embeddings": 3}],
)
def test_hidden_states_and_padding(changes):
    cfg = dataclasses.replace(BASE, **changes)
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 10, 16)))
    mask = np.arange(10)[None] < np.array([[10], [6]])
    mod, p, (hs, last) = _run(cfg, x, mask)
    assert len(hs) == cfg.num_layers + 1 and all(h.shape == (2, 10, 16) for h in hs)
    if not cfg.layer_norm_first:
        np.testing.assert_array_equal(hs[-1], last)
    else:
        assert not np.allclose(hs[-1], last)
    # Valid frames do not depend on what the padded frames hold.
    x2 = x.copy()
    x2[1, 6:] = 100.0
    hs2, _ = mod.apply(p, x2, mask)
    alone, _ = mod.apply(p, x[1:, :6], mask[1:, :6])
    for a, b, c in zip(hs, hs2, alone):
        np.testing.assert_allclose(a[1, :6], b[1, :6], atol=1e-5)
        np.testing.assert_allclose(a[1, :6], c[0], atol=1e-5)


def test_layerdrop_and_dropout_need_rng_and_change_outputs():
    cfg = dataclasses.replace(BASE, layerdrop=0.9)
    x = jax.random.normal(jax.random.key(1), (2, 10, 16))
    mask = jnp.ones((2, 10), bool)
    mod, p, (hs, _) = _run(cfg, x, mask)
    run = jax.jit(lambda key: mod.apply(p, x, mask, deterministic=False, rngs={"dropout": key})[0])
    outs = [run(jax.random.key(s)) for s in range(4)]
    # With layerdrop 0.9 some layer is skipped in some draw: its output equals its input.
    skipped = any(np.array_equal(o[i], o[i + 1]) for o in outs for i in range(cfg.num_layers))
    assert skipped
    assert not np.allclose(outs[0][-1], hs[-1])


def _grad_of_projection(cfg, params, x, mask):
    """Gradient of a random projection of the last layer's output (not its squared norm: after a
    post-LN layer that norm hardly depends on the layer, so its gradient would be rounding noise),
    with dropout and LayerDrop drawing from a fixed `dropout` key."""
    r = jax.random.normal(jax.random.key(4), x.shape)

    def loss(p):
        hs, _ = TransformerEncoder(cfg).apply(p, x, mask, deterministic=False, rngs={"dropout": jax.random.key(3)})
        return jnp.sum(hs[-1] * r)

    return jax.jit(jax.grad(loss))(params)


def test_remat_policies_match():
    x = jax.random.normal(jax.random.key(1), (2, 10, 16))
    mask = jnp.ones((2, 10), bool)
    _, p, (hs, _) = _run(BASE, x, mask)
    g = _grad_of_projection(BASE, p, x, mask)
    for policy in ("full", "dots_saveable"):
        hs_r, _ = TransformerEncoder(dataclasses.replace(BASE, remat=policy)).apply(p, x, mask)
        np.testing.assert_allclose(hs_r[-1], hs[-1], atol=1e-6)
        g_r = _grad_of_projection(dataclasses.replace(BASE, remat=policy), p, x, mask)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), g, g_r)


def test_remat_policies_recompute_what_they_do_not_save():
    # XLA's cost analysis of the backward pass: "full" recomputes every layer's forward, including
    # its matmuls; "dots_saveable" keeps the matmul outputs, so it recomputes less. (The memory
    # this buys shows on accelerators; XLA:CPU's buffer assignment keeps about the same scratch.)
    cfg = dataclasses.replace(BASE, hidden_size=64, intermediate_size=256, num_heads=4, num_layers=2, layerdrop=0.0)
    x = jax.random.normal(jax.random.key(1), (2, 50, 64))
    mask = jnp.ones(x.shape[:2], bool)
    p = TransformerEncoder(cfg).init(jax.random.key(0), x, mask)

    def flops(policy):
        c = dataclasses.replace(cfg, remat=policy)
        fn = jax.jit(jax.grad(lambda q: jnp.sum(TransformerEncoder(c).apply(q, x, mask)[1] ** 2)))
        cost = fn.lower(p).compile().cost_analysis()
        return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]

    none, full, dots = flops("none"), flops("full"), flops("dots_saveable")
    assert full > 1.2 * none and none < dots < full
    with pytest.raises(ValueError, match="dots_saveable"):
        dataclasses.replace(cfg, remat="dot_saveable")
    assert dataclasses.replace(cfg, remat=True).remat == "full"  # configs written before the names


def test_bfloat16_compute_float32_parameters():
    x = jax.random.normal(jax.random.key(1), (2, 10, 16))
    mask = jnp.ones((2, 10), bool)
    _, p, (hs, _) = _run(BASE, x, mask)
    mod = TransformerEncoder(dataclasses.replace(BASE, dtype="bfloat16"))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(mod.init(jax.random.key(0), x, mask)))
    hs_b, _ = mod.apply(p, x, mask)
    assert hs_b[-1].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(hs_b[-1], np.float32), hs[-1], atol=0.1)


def test_logical_axes_on_params():
    from flax.core import meta

    from ssl_jax.models import LOGICAL_AXES

    x = jnp.zeros((1, 4, 16))
    p = TransformerEncoder(BASE).init(jax.random.key(0), x, jnp.ones((1, 4), bool))
    boxes = jax.tree.leaves(p, is_leaf=lambda v: isinstance(v, meta.Partitioned))
    assert boxes and all(isinstance(b, meta.Partitioned) for b in boxes)
    for b in boxes:
        assert all(a is None or a in LOGICAL_AXES for a in b.names)


def _top_level_primitives(fn, *args) -> list[str]:
    return [str(e.primitive) for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns]


@pytest.mark.parametrize("remat", [False, True])
def test_dropped_layer_is_not_run_and_gets_no_gradient(remat):
    cfg = dataclasses.replace(BASE, layerdrop=1.0, hidden_dropout=0.0, attention_dropout=0.0, remat=remat)
    x = jax.random.normal(jax.random.key(1), (2, 10, 16))
    mask = jnp.arange(10)[None] < jnp.array([[10], [7]])
    mod = TransformerEncoder(cfg)
    p = mod.init(jax.random.key(0), x, mask)

    def train(params):
        return mod.apply(params, x, mask, deterministic=False, rngs={"dropout": jax.random.key(5)},
                         mutable=[LAYERDROP_COLLECTION])

    (hs, _), sown = jax.jit(train)(p)
    np.testing.assert_array_equal(np.asarray(sown[LAYERDROP_COLLECTION][LAYERS_KEPT][0]), [False] * cfg.num_layers)
    for h in hs[1:]:
        np.testing.assert_array_equal(h, hs[0])
    g = jax.jit(jax.grad(lambda params: jnp.sum(train(params)[0][1] * x)))(p)["params"]
    for i in range(cfg.num_layers):
        assert all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(g[f"layers_{i}"]))
    assert any(np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(g["pos_conv"]))
    # Each layer sits behind a conditional: no layer matmul is in the unconditional program,
    # whereas the deterministic program runs them all.
    train_prims = _top_level_primitives(lambda params: train(params)[0][1], p)
    assert train_prims.count("cond") == cfg.num_layers and "dot_general" not in train_prims
    eval_prims = _top_level_primitives(lambda params: mod.apply(params, x, mask)[1], p)
    assert "cond" not in eval_prims


def test_layerdrop_is_sown_only_when_active():
    x = jnp.zeros((1, 4, 16))
    mask = jnp.ones((1, 4), bool)
    for cfg, deterministic in ((BASE, True), (dataclasses.replace(BASE, layerdrop=0.0), False)):
        mod = TransformerEncoder(cfg)
        p = mod.init(jax.random.key(0), x, mask)
        _, sown = jax.eval_shape(
            lambda params: mod.apply(params, x, mask, deterministic=deterministic, rngs={"dropout": jax.random.key(1)},
                                     mutable=[LAYERDROP_COLLECTION]),
            p,
        )
        assert not sown


def test_dropped_layers_mask_marks_whole_layers():
    p = TransformerEncoder(BASE).init(jax.random.key(0), jnp.zeros((1, 4, 16)), jnp.ones((1, 4), bool))["params"]
    marks = dropped_layers_mask(p, jnp.array([True, False, True]))
    assert jax.tree.structure(marks) == jax.tree.structure(p)
    for name, subtree in marks.items():
        leaves = [bool(v) for v in jax.tree.leaves(subtree)]
        assert leaves and all(v == (name == "layers_1") for v in leaves), name
