"""Tests for `train.init_from` (ssl_jax/training/warm_start.py)."""

import jax
import numpy as np
import pytest

from ssl_jax.training.warm_start import WarmStartError, merge


def _fresh():
    s = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)  # noqa: E731
    return {
        "encoder": {"proj": {"kernel": s(4, 8), "bias": s(8)}, "layer_0": {"w": s(8, 8)}},
        "head": {"kernel": s(8, 3)},
        "label_embeddings": s(10, 3),
    }


def _checkpoint(**changes):
    ck = {
        "encoder": {"proj": {"kernel": np.ones((4, 8)), "bias": np.ones(8)}, "layer_0": {"w": np.ones((8, 8))}},
        "head": {"kernel": np.full((8, 3), 2.0)},
        "label_embeddings": np.zeros((5, 3)),
    }
    ck.update(changes)
    return ck


def test_encoder_and_matching_heads_are_loaded_the_rest_stays_fresh():
    out = merge(_fresh(), _checkpoint())
    assert out.params["encoder"]["layer_0"]["w"].dtype == np.float32
    np.testing.assert_array_equal(out.params["head"]["kernel"], 2.0)
    assert isinstance(out.params["label_embeddings"], jax.ShapeDtypeStruct)  # 5 vs 10 clusters
    assert out.fresh == ["label_embeddings"] and len(out.loaded) == 4


def test_an_encoder_mismatch_names_every_differing_parameter():
    bad = _checkpoint(encoder={"proj": {"kernel": np.ones((4, 16)), "bias": np.ones(8)}, "extra": {"w": np.ones(2)}})
    with pytest.raises(WarmStartError) as e:
        merge(_fresh(), bad, source="runs/other")
    msg = str(e.value)
    assert "runs/other" in msg and "3 differences" in msg
    assert "encoder/proj/kernel: checkpoint [4, 16] vs model [4, 8]" in msg
    assert "encoder/layer_0/w: missing from the checkpoint" in msg
    assert "encoder/extra/w: in the checkpoint, not in the model" in msg
    with pytest.raises(WarmStartError, match="no encoder"):
        merge(_fresh(), {"head": {}})
