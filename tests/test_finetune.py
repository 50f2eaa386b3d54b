"""CTC fine-tuning: frozen feature extractor, delayed encoder updates, greedy-decoded WER."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import finetune
from ssl_jax.models.encoder import EncoderConfig, SpeechEncoder

TINY = dict(conv_dim=(16,) * 7, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, hidden_dropout=0.0,
            attention_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0, num_codevectors_per_group=8,
            codevector_dim=16, proj_codevector_dim=16)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from flax.core import meta

    from ssl_jax.training.checkpoint import save_pretrained

    cfg = EncoderConfig(**TINY)
    params = SpeechEncoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 16000)), jnp.ones((1, 16000), bool))
    out = str(tmp_path_factory.mktemp("pretrained"))
    save_pretrained(out, {"encoder": meta.unbox(params["params"])}, {"model": cfg.to_dict()})
    return out


def test_trainable_mask_freezes_feature_extractor_and_gates_encoder():
    params = {"encoder": {"feature_extractor": {"w": 1.0}, "encoder": {"w": 1.0}, "mask_embedding": 1.0},
              "ctc_head": {"kernel": 1.0}}
    off = finetune.trainable_mask(params, jnp.bool_(False))
    on = finetune.trainable_mask(params, jnp.bool_(True))
    assert float(off["encoder"]["feature_extractor"]["w"]) == 0 and float(on["encoder"]["feature_extractor"]["w"]) == 0
    assert float(off["encoder"]["encoder"]["w"]) == 0 and float(on["encoder"]["encoder"]["w"]) == 1
    assert float(off["ctc_head"]["kernel"]) == 1 and float(on["encoder"]["mask_embedding"]) == 1


def test_tri_stage_schedule():
    s = finetune.tri_stage(1.0, 100, (0.1, 0.4, 0.5), 0.05)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1.0) and float(s(40)) == pytest.approx(1.0)
    assert float(s(100)) == pytest.approx(0.05, rel=1e-3)


def test_span_mask_statistics():
    rng = np.random.default_rng(0)
    m = finetune.span_mask(rng, np.array([1000, 10]), 1000, 0.05, 5)
    assert m[1, 10:].sum() == 0 and m[1].sum() <= 10
    assert 0.1 < m[0].mean() < 0.35  # 1 - (1 - 0.05)^5 ~= 0.23


def _config(tiny_corpus):
    from ssl_jax.training.config_check import load_config_file

    cfg = load_config_file(os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "finetune_ctc_tiny.py") + ":smoke")
    cfg.data.path = tiny_corpus
    return cfg


def test_finetune_end_to_end(checkpoint, tiny_corpus, tmp_path):
    from ssl_jax.training.checkpoint import load_pretrained

    cfg = _config(tiny_corpus)
    cfg.train.log_every = 1
    seen = {}
    results = finetune.finetune(cfg, checkpoint, str(tmp_path), log=lambda m: None,
                                on_step=lambda step, p: seen.__setitem__(step, jax.tree.map(np.asarray, p)))
    assert set(results) == {"asr"} and results["asr"]["cer"] > 0.0 and results["asr"]["wer"] > 0.0
    assert json.load(open(tmp_path / "results.json")) == results
    recs = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in recs] == list(range(1, 7)) and all(np.isfinite(r["loss"]) for r in recs)
    assert [r["encoder_frozen"] for r in recs] == [True] * 3 + [False] * 3
    assert os.listdir(tmp_path / "tb")

    before = load_pretrained(checkpoint)[0]["encoder"]
    # The conv feature extractor never changes.
    for p in seen.values():
        jax.tree.map(np.testing.assert_array_equal, before["feature_extractor"], p["encoder"]["feature_extractor"])
    # During the freeze only the output layer moves; afterwards the Transformer does too.
    jax.tree.map(np.testing.assert_array_equal, before["encoder"], seen[3]["encoder"]["encoder"])
    assert not np.array_equal(seen[1]["ctc_head"]["kernel"], seen[3]["ctc_head"]["kernel"])
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                         seen[6]["encoder"]["encoder"], before["encoder"]))
    assert max(moved) > 0
