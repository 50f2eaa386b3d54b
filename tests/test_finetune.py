"""CTC fine-tuning: frozen feature extractor, delayed encoder updates, greedy-decoded WER."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
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


def test_optimizer_freezes_feature_extractor_and_starts_the_encoder_late():
    from ml_collections import config_dict

    params = {"encoder": {"feature_extractor": {"w": jnp.ones(2)}, "encoder": {"w": jnp.ones(2)},
                          "mask_embedding": jnp.ones(2)},
              "ctc_head": {"kernel": jnp.ones(2)}}
    optim = config_dict.ConfigDict(dict(weight_decay=0.0, clip_norm=10.0))
    tx = finetune.make_optimizer(params, optim, lambda c: 0.1, freeze_steps=2)
    state, grads = tx.init(params), jax.tree.map(jnp.ones_like, params)
    p = params
    for _ in range(2):
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    # Frozen for 2 updates: the encoder has not moved, nor have its Adam moments and count.
    np.testing.assert_array_equal(p["encoder"]["encoder"]["w"], 1.0)
    adam = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)]
    counts = sorted(int(s.count) for s in adam)
    assert counts == [0, 2]  # encoder, head
    assert all(float(jnp.abs(x).max()) == 0 for s in adam if int(s.count) == 0 for x in jax.tree.leaves(s.mu))
    assert float(p["ctc_head"]["kernel"][0]) < 1.0
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
    assert float(p["encoder"]["encoder"]["w"][0]) < 1.0 and float(p["encoder"]["mask_embedding"][0]) < 1.0
    np.testing.assert_array_equal(p["encoder"]["feature_extractor"]["w"], 1.0)  # never


def test_tri_stage_schedule():
    s = finetune.tri_stage(1.0, 100, (0.1, 0.4, 0.5), 0.05)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1.0) and float(s(40)) == pytest.approx(1.0)
    assert float(s(100)) == pytest.approx(0.05, rel=1e-3)


def _config(tiny_corpus):
    from ssl_jax.training.config_check import load_config_file

    cfg = load_config_file(os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "finetune_ctc_tiny.py") + ":smoke")
    cfg.data.path = tiny_corpus
    return cfg


def test_random_upstream_is_the_recipes_initial_encoder():
    """`random:CONFIG`, the control run that shows what pretraining adds, starts from the weights
    that training of that recipe starts from (those evaluate's `random:` upstream probes)."""
    from ssl_jax.downstream.upstreams import random_init

    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    params, cfg, normalize = finetune.load_upstream(f"random:{configs}/w2v2_tiny.py")
    assert isinstance(cfg, EncoderConfig) and cfg.frontend == "logmel" and cfg.hidden_size == 128
    jax.tree.map(np.testing.assert_array_equal, params, jax.tree.map(np.asarray, random_init(f"{configs}/w2v2_tiny.py").params))
    with pytest.raises(ValueError, match="wav2vec 2.0-family"):
        finetune.load_upstream(f"random:{configs}/apc_tiny.py")


def test_model_selection_metric_must_be_one_that_is_scored(tmp_path):
    cfg = _config("")
    cfg.data.target = "phonemes"  # scored on PER only; the config selects on CER
    with pytest.raises(ValueError, match="select_metric 'cer'.*expected one of \\('per',\\)"):
        finetune.finetune(cfg, str(tmp_path / "never_read"), str(tmp_path))


def test_finetune_end_to_end(checkpoint, tiny_corpus, tmp_path):
    from ssl_jax.training.checkpoint import load_pretrained

    cfg = _config(tiny_corpus)
    cfg.train.log_every = 1
    seen = {}
    results = finetune.finetune(cfg, checkpoint, str(tmp_path), log=lambda m: None,
                                on_step=lambda step, p: seen.__setitem__(step, jax.tree.map(np.asarray, p)))
    assert set(results) == {"asr", "selection"} and results["asr"]["cer"] > 0.0 and results["asr"]["wer"] > 0.0
    for metric in ("wer", "cer"):
        lo, hi = results["asr"][f"{metric}_ci"]
        assert lo <= results["asr"][metric] <= hi
    assert results["selection"]["metric"] == "cer" and results["selection"]["step"] in (3, 6)
    assert json.load(open(tmp_path / "results.json")) == results
    # The selected parameters are saved as a checkpoint: the step chosen on valid, CTC head and vocabulary beside the encoder.
    saved, saved_cfg = load_pretrained(str(tmp_path / "model"))
    jax.tree.map(np.testing.assert_array_equal, saved, seen[results["selection"]["step"]])
    assert len(saved_cfg["vocab"]) + 1 == saved["ctc_head"]["kernel"].shape[-1]
    units = np.load(tmp_path / "units.npz")
    assert str(units["asr/cer/kind"]) == "ratio" and float(units["asr/cer/den"].min()) > 0
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


def test_train_step_and_greedy_decoding_learn_to_transcribe_a_few_utterances(tiny_corpus):
    """CTC loss, label ids, masks and greedy decoding agree: 8 utterances are overfit to a CER of
    about 0 in 100 updates (measured: 0 from step 60 on), from above 0.9 before training."""
    from flax.core import meta
    from ml_collections import config_dict

    from ssl_jax.downstream import stats, tasks

    enc = EncoderConfig(frontend="logmel", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, hidden_dropout=0.0,
                        attention_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0, layer_norm_first=True,
                        num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=16)
    cfg = config_dict.ConfigDict(dict(data=dict(path=tiny_corpus, splits=("train", "valid", "test"), max_seconds=4.0),
                                      train=dict(mask_prob=0.0, mask_length=5)))
    task = tasks.get("asr")
    train = finetune.load_splits(cfg, task)["train"]
    short = np.argsort([train.source.num_samples[i] for i in train.rows], kind="stable")[:8]
    split = finetune.Split(train.source, [train.rows[i] for i in short], [train.targets[i] for i in short])
    vocab = sorted({t for tgt in split.targets for t in tgt})
    model = finetune.CTCModel(enc, len(vocab) + 1)
    longest = max(int(split.source.num_samples[i]) for i in split.rows)
    batcher = finetune.Batcher(enc, [longest], {t: k + 1 for k, t in enumerate(vocab)}, False)
    params = meta.unbox(jax.jit(model.init)(jax.random.key(0), *batcher.audio(split, [0], 1))["params"])
    optim = config_dict.ConfigDict(dict(weight_decay=0.0, clip_norm=5.0))
    tx = finetune.make_optimizer(params, optim, optax.constant_schedule(3e-3), freeze_steps=0)
    opt_state = tx.init(params)
    step = finetune.make_train_step(model, tx, cfg.train)
    score = finetune.make_scorer(model, batcher, vocab, task, batch_size=8)
    batch = batcher.train(split, list(range(8)), 8)

    assert stats.point(score(params, split)["cer"]) > 0.9
    for i in range(100):
        params, opt_state, loss, _ = step(params, opt_state, batch, jax.random.key(i))
    after = {k: stats.point(m) for k, m in score(params, split).items()}
    assert after["cer"] < 0.05 and after["wer"] < 0.15, after


def test_comparison_with_a_probe_is_paired_on_the_same_test_set(tmp_path):
    from ssl_jax.downstream import stats, tasks

    task = tasks.get("asr")
    rng = np.random.default_rng(0)
    den = rng.integers(20, 60, 200).astype(float)
    probe = {"cer": stats.Ratio(0.4 * den, den), "wer": stats.Ratio(np.ones(200), np.full(200, 4.0))}
    np.savez(tmp_path / "units.npz", **{k: v for m, r in probe.items() for k, v in stats.to_arrays(r, f"asr/{m}").items()})
    better = {"cer": stats.Ratio(0.3 * den + rng.normal(0, 1, 200), den), "wer": probe["wer"]}
    out = finetune.compare_with_probe(better, task, str(tmp_path))
    assert out["cer"]["better"] == 1 and out["cer"]["delta"] == pytest.approx(stats.point(better["cer"]) - 0.4)
    assert out["wer"]["better"] == 0 and out["wer"]["delta"] == 0.0
    with pytest.raises(ValueError, match="test set is not this one"):
        finetune.compare_with_probe({"cer": stats.Ratio(den[:100], den[:100])}, task, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no units.npz"):
        finetune.compare_with_probe(better, task, str(tmp_path / "elsewhere"))
