"""Tests for ssl_jax/models/position.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.position import (
    ConvPositionalEmbedding,
    PositionBiasGate,
    RelativePositionBias,
    StackedConvPositionalEmbedding,
    relative_position_buckets,
)


@pytest.mark.parametrize("kernel", [4, 5])
def test_conv_pos_keeps_length_and_is_weight_normalised(kernel):
    x = jax.random.normal(jax.random.key(0), (2, 9, 8))
    mask = jnp.ones((2, 9), bool)
    mod = ConvPositionalEmbedding(8, kernel, 2)
    p = mod.init(jax.random.key(1), x, mask)
    assert mod.apply(p, x, mask).shape == (2, 9, 8)
    # Scaling v leaves the output unchanged: the weight is g * v / |v|.
    p2 = jax.tree.map(lambda a: a, p)
    p2["params"]["weight_v"] = jax.tree.map(lambda a: a * 3.0, p["params"]["weight_v"])
    np.testing.assert_allclose(mod.apply(p, x, mask), mod.apply(p2, x, mask), atol=1e-5)
    assert p["params"]["weight_g"].unbox().shape == (kernel,)


def test_stacked_conv_pos_is_padding_invariant():
    x = np.asarray(jax.random.normal(jax.random.key(0), (1, 12, 8)))
    mask = np.arange(12)[None] < 7
    xp = np.where(mask[..., None], x, 0.0)
    mod = StackedConvPositionalEmbedding(8, 3, 2, 3)
    p = mod.init(jax.random.key(1), xp, mask)
    padded = mod.apply(p, xp, mask)
    alone = mod.apply(p, xp[:, :7], mask[:, :7])
    np.testing.assert_allclose(padded[:, :7], alone, atol=1e-5)


def test_relative_buckets():
    b = relative_position_buckets(60, 16, 40)
    assert b.shape == (60, 60)
    assert b.min() >= 0 and b.max() < 16
    np.testing.assert_array_equal(np.diag(b), 0)
    # Small offsets get their own bucket; keys after the query use the upper half.
    assert b[10, 11] == 9 and b[11, 10] == 1 and b[10, 13] == 11
    # Offsets beyond max_distance share the last bucket of their half.
    assert b[0, 59] == 15 and b[59, 0] == 7
    # Monotone in the offset within a half.
    assert np.all(np.diff(b[0, :]) >= 0)


def test_gate_shapes_and_identity_at_init():
    bias_mod = RelativePositionBias(16, 40, 2)
    pb = bias_mod.init(jax.random.key(0), 5)
    bias = bias_mod.apply(pb, 5)
    assert bias.shape == (2, 5, 5)
    x = jax.random.normal(jax.random.key(1), (3, 5, 8))
    gate = PositionBiasGate(2)
    pg = gate.init(jax.random.key(2), x, bias)
    out = gate.apply(pg, x, bias)
    assert out.shape == (3, 2, 5, 5)
    # With zero projection weights the gate is 0.5 * (0.5 * 1 - 1) + 2 = 1.75.
    pg = jax.tree.map(jnp.zeros_like, pg)
    pg["params"]["gru_rel_pos_const"] = jnp.ones((2,))
    np.testing.assert_allclose(gate.apply(pg, x, bias), 1.75 * np.broadcast_to(bias, (3, 2, 5, 5)), rtol=1e-6)


def test_grouped_conv_matches_feature_group_count():
    from ssl_jax.models.position import grouped_conv1d

    x = jax.random.normal(jax.random.key(0), (2, 9, 8))
    w = jax.random.normal(jax.random.key(1), (5, 2, 12))
    ref = jax.lax.conv_general_dilated(
        x, w, (1,), [(2, 2)], dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=4
    )
    np.testing.assert_allclose(grouped_conv1d(x, w, 4, (2, 2)), ref, atol=1e-5)
