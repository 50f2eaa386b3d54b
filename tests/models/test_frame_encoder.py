"""Tests for ssl_jax/models/frame_encoder.py and models/rnn.py: padding never leaks in, causal
bodies never look ahead, NPC's masked features never see their own frames, and every body
loads into Upstream."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.frame_encoder import Config, Encoder
from ssl_jax.models.rnn import reverse_valid

BODIES = {
    "gru": dict(body="rnn", cell="gru"),
    "bilstm": dict(body="rnn", cell="lstm", bidirectional=True),
    "causal_conv": dict(body="conv"),
    "npc": dict(body="npc", npc_kernel=11, npc_mask=3, num_layers=3),
    "transformer": dict(body="transformer", num_heads=2, intermediate_size=32, num_conv_pos_embeddings=4,
                        num_conv_pos_embedding_groups=4),
    "gru_vq": dict(body="rnn", vq_layer=1, vq_groups=2, vq_codes=8),
}
CAUSAL = ("gru", "causal_conv", "gru_vq")


def build(name):
    kw = dict(BODIES[name])
    cfg = Config(hidden_size=16, num_layers=kw.pop("num_layers", 2), logmel_bins=16, **kw)
    enc = Encoder(cfg)
    x = jax.random.normal(jax.random.key(0), (2, 6400))
    m = jnp.arange(6400)[None] < jnp.array([[6400], [4800]])
    return cfg, enc, enc.init(jax.random.key(1), x, m), x, m


@pytest.mark.parametrize("name", sorted(BODIES))
def test_padding_is_ignored_and_causal_bodies_do_not_look_ahead(name):
    cfg, enc, v, x, m = build(name)
    out = enc.apply(v, x, m)
    assert len(out.hidden_states) == cfg.num_hidden_states
    assert int(out.frame_mask[1].sum()) == int(cfg.frame_lengths(np.array(4800)))
    padded = enc.apply(v, x.at[1, 4800:].set(3.0), m)
    for a, b in zip(out.hidden_states, padded.hidden_states):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    feats, fm, _ = enc.apply(v, x, m, method="features")
    base = enc.apply(v, feats, fm, method="body")
    later = enc.apply(v, feats.at[:, 15:].add(1.0), fm, method="body")
    past = max(float(jnp.abs(a[:, :15] - b[:, :15]).max()) for a, b in zip(base.hidden_states, later.hidden_states))
    assert (past == 0.0) == (name in CAUSAL), past


def test_npc_masked_features_never_see_their_own_neighbourhood():
    cfg, enc, v, x, m = build("npc")
    feats, fm, _ = enc.apply(v, x, m, method="features")
    base = enc.apply(v, feats, fm, method="body").hidden_states[-1]
    moved = enc.apply(v, feats.at[:, 20].add(5.0), fm, method="body").hidden_states[-1]
    changed = np.nonzero(np.asarray(jnp.abs(base - moved).max(-1)[0]) > 1e-6)[0]
    half = cfg.npc_mask // 2
    reach = cfg.npc_kernel // 2 + cfg.num_layers  # masked-conv width plus the blocks' own context
    assert not set(range(20 - half, 20 + half + 1)) & set(changed.tolist())
    assert {20 - half - 1, 20 + half + 1} <= set(changed.tolist()) and changed.max() == 20 + reach and changed.min() == 20 - reach


def test_reverse_valid_keeps_padding_in_place():
    x = jnp.arange(10.0).reshape(2, 5, 1)
    r = reverse_valid(x, jnp.array([5, 3]))
    assert r[:, :, 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]


def test_upstream_reads_every_hidden_state():
    from ssl_jax.upstream import Upstream

    cfg, enc, v, x, m = build("npc")
    up = Upstream(v["params"], cfg, min_samples=6400)
    feats = up.embed([np.asarray(x[1, :4800])], batch_size=1)[0]
    assert feats.shape == (cfg.num_hidden_states, int(cfg.frame_lengths(np.array(4800))), 16)


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="npc_mask"):
        Config(body="npc", npc_kernel=7, npc_mask=5, num_layers=2)
    with pytest.raises(ValueError, match="vq_layer"):
        Config(body="transformer", vq_layer=0, num_heads=8)
    with pytest.raises(ValueError, match="body"):
        Config(body="lstm")
