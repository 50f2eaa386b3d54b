"""Weighted-sum probe: feature caching, batching, decoding, trials and the three task families."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import config_dict

from ssl_jax.data.shards import ShardSource
from ssl_jax.downstream import heads, probe, store, tasks
from tests.downstream import fakes


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return fakes.write_fake_corpus(str(tmp_path_factory.mktemp("fake")), per_split=72)


@pytest.fixture(scope="module")
def stores(fake_dir, tmp_path_factory):
    up = fakes.SpectrumUpstream()
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for s in ("train", "valid", "test", "test_unseen"):
        src = ShardSource(fake_dir, s)
        out[s] = store.open_or_build(str(root / s), {"split": s}, up.embed, lambda i: src[i]["audio"],
                                     src.num_samples, up.frame_rate, chunk=5, log=lambda m: None)
    return out


def _data(task, fake_dir, stores, splits=("train", "valid", "test"), layer=None):
    out = {}
    mean = std = None
    for role, split in zip(("train", "valid", "test"), splits):
        man = ShardSource(fake_dir, split).manifest
        idx = np.array([i for i, m in enumerate(man) if task.select(m)])
        if mean is None:
            mean, std = store.layer_stats(stores[split], idx)
            if layer is not None:
                mean, std = mean[layer:layer + 1], std[layer:layer + 1]
        out[role] = probe.TaskData(stores[split], idx, [task.target(man[i]) for i in idx], mean, std, layer)
    return out


def _hp(**kw):
    h = dict(lr=1e-2, weight_decay=0.0, clip_norm=5.0, batch_size=8, eval_batch_size=8,
             max_steps=120, eval_every=40, patience=10)
    h.update(kw)
    return config_dict.ConfigDict(h)


def test_store_matches_unbatched_upstream_and_reopens(fake_dir, stores, tmp_path):
    up = fakes.SpectrumUpstream()
    src = ShardSource(fake_dir, "valid")
    fs = stores["valid"]
    assert len(fs) == len(src) and (fs.num_layers, fs.dim) == (2, 32)
    for i in (0, 5, len(src) - 1):
        audio = src[i]["audio"]
        ref = up(audio[None], np.array([len(audio)]))
        want = np.stack([h[0] for h in ref.hidden_states])[:, : int(ref.lengths[0])]
        assert fs.frames(i).shape == want.shape
        np.testing.assert_allclose(fs.frames(i).astype(np.float32), want, rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(fs.frames(i, layer=1)[0], fs.frames(i)[1])
        np.testing.assert_allclose(fs.pooled[i], want.mean(1), rtol=2e-3, atol=2e-3)
    # Same key: reopened without extracting; another key: extracted again.
    calls = []

    def embed(w):
        calls.append(len(w))
        return up.embed(w)

    args = (embed, lambda i: src[i]["audio"], src.num_samples, 50.0)
    store.open_or_build(str(tmp_path / "s"), {"k": 1}, *args, log=lambda m: None)
    store.open_or_build(str(tmp_path / "s"), {"k": 1}, *args, log=lambda m: None)
    assert sum(calls) == len(src)
    store.open_or_build(str(tmp_path / "s"), {"k": 2}, *args, log=lambda m: None)
    assert sum(calls) == 2 * len(src)
    # A clip model's own pooling (BYOL-A: temporal mean + max) pools every layer.
    fs = store.open_or_build(str(tmp_path / "p"), {"k": 3}, *args, log=lambda m: None, pooling="mean+max")
    f = fs.frames(0).astype(np.float32)
    np.testing.assert_allclose(fs.pooled[0], f.mean(1) + f.max(1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        store.open_or_build(str(tmp_path / "q"), {"k": 4}, *args, log=lambda m: None, pooling="max")


def test_task_standardisation_uses_the_task_training_frames(fake_dir, stores):
    task = tasks.get("pr")
    data = _data(task, fake_dir, stores)
    train = np.concatenate([data["train"].frames(r) for r in range(len(data["train"]))], axis=1)
    np.testing.assert_allclose(train.mean(1), 0.0, atol=2e-2)
    std = train.std(1)
    # Constant dimensions stay constant (std floor); every other one has unit variance.
    assert (np.abs(std - 1.0) < 2e-2).mean() > 0.9 and ((np.abs(std - 1.0) < 2e-2) | (std < 1e-3)).all()
    v = data["valid"]
    np.testing.assert_allclose(v.pooled()[3], v.frames(3).mean(1), atol=1e-2)
    one = _data(task, fake_dir, stores, layer=1)["valid"]
    assert one.num_layers == 1
    np.testing.assert_allclose(one.frames(3)[0], v.frames(3)[1], atol=1e-5)


def test_frame_batch_stacks_and_masks():
    a = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    b = np.ones((2, 2, 3), np.float32)
    x, mask = probe.frame_batch([a, b], stack=2, pad_to=4, batch_size=3)
    assert x.shape == (3, 2, 4, 6) and mask.shape == (3, 4)
    assert mask.sum(1).tolist() == [3, 1, 0]
    np.testing.assert_array_equal(x[0, 1, 0], np.concatenate([a[1, 0], a[1, 1]]))
    np.testing.assert_array_equal(x[0, 0, 2], np.concatenate([a[0, 4], np.zeros(3)]))


def test_bucket_grid():
    vals = [probe.bucket(n) for n in range(1, 2000)]
    assert all(v >= n for n, v in zip(range(1, 2000), vals))
    assert len(set(vals)) < 20
    assert all(v <= max(32, 1.3 * n + 16) for n, v in zip(range(1, 2000), vals))


def test_greedy_ctc_collapses_repeats_and_blanks():
    path = np.array([0, 2, 2, 0, 2, 3, 3, 0, 1, 1])
    logits = np.eye(4)[path][None]
    assert probe.greedy_ctc(logits, np.ones((1, 10), bool)) == [[2, 2, 3, 1]]
    assert probe.greedy_ctc(logits, np.arange(10)[None] < 5) == [[2, 2]]


def test_make_trials_balanced_and_valid():
    spk = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    tr = probe.make_trials(spk, 3, seed=0)
    assert (tr[:, 0] < tr[:, 1]).all()
    same = np.array([spk[i] == spk[j] for i, j, _ in tr])
    np.testing.assert_array_equal(same, tr[:, 2] == 1)
    assert 0.3 < tr[:, 2].mean() < 0.7
    np.testing.assert_array_equal(tr, probe.make_trials(spk, 3, seed=0))


def test_layer_mix_is_softmax_weighted_sum():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    mix = heads.LayerMix(3)
    params = {"layer_logits": np.array([0.0, 1.0, -1.0], np.float32)}
    out = mix.apply({"params": params}, x)
    w = np.exp(params["layer_logits"]) / np.exp(params["layer_logits"]).sum()
    np.testing.assert_allclose(out, np.einsum("blfd,l->bfd", x, w), rtol=1e-5, atol=1e-6)


def test_classify_learns_keywords_and_intents(fake_dir, stores):
    logs = []
    for name in ("ks", "ic"):
        task = tasks.get(name)
        res = probe.run_classify(task, _data(task, fake_dir, stores), _hp(), 0,
                                 lambda *a: logs.append(a))
        assert res.metrics["acc"] >= 0.75, (name, res.metrics)
        assert res.layer_weights.shape == (2,) and abs(res.layer_weights.sum() - 1) < 1e-5
        assert res.units["acc"].num_units == res.info["utterances"]["test"]
        assert res.fit.curve and res.fit.curve[-1]["step"] == res.fit.steps
    assert any(tag == "ks/valid_acc" for tag, _, _ in logs)
    # Intent slots are scored one by one too; all three right is never likelier than one.
    assert set(res.metrics) == {"acc", "acc_action", "acc_object", "acc_location"}
    assert all(res.metrics["acc"] <= res.metrics[k] for k in res.metrics)


def test_ctc_learns_phones(fake_dir, stores):
    task = tasks.get("pr")
    res = probe.run_ctc(task, _data(task, fake_dir, stores), _hp(head="linear", max_steps=200), 0,
                        stack=1, log_scalar=lambda *a: None)
    assert res.metrics["per"] < 0.5, res.metrics


def test_bilstm_ctc_head_learns_to_spell(fake_dir, stores):
    task = tasks.get("asr")
    res = probe.run_ctc(task, _data(task, fake_dir, stores),
                        _hp(head="bilstm", hidden=32, lstm_layers=1, max_steps=200, eval_every=50), 0,
                        stack=2, log_scalar=lambda *a: None)
    assert set(res.metrics) == {"wer", "cer"}
    # It learns to spell the fake corpus: CER 0.41 measured after 200 steps, 0.80 after 20.
    assert res.metrics["cer"] < 0.6, res.metrics
    assert res.info["stack"] == 2


def test_verify_separates_unseen_speakers(fake_dir, stores):
    task = tasks.get("asv")
    res = probe.run_verify(task, _data(task, fake_dir, stores, ("train", "valid", "test_unseen")),
                           _hp(channels=16, embed_dim=8, trials_per_utterance=5, max_steps=80), 0,
                           stack=1, log_scalar=lambda *a: None)
    assert res.info["test_speakers"] == 2
    assert res.metrics["eer"] < 0.3, res.metrics


def test_early_stopping_keeps_best_parameters():
    task = tasks.get("ks")
    scores = iter([0.5, 0.9, 0.4, 0.3, 0.2, 0.1])
    seen = []

    def validate(p):
        seen.append(jax.tree.map(np.asarray, p))
        return {"acc": next(scores)}

    model = heads.UtteranceClassifier(2, (3,))
    x = np.zeros((4, 2, 32), np.float32)

    def batches():
        while True:
            yield {"x": x, "y": np.zeros((4,), np.int32)}

    def loss_fn(p, b, key):
        return -model.apply({"params": p}, b["x"])[0][:, 0].mean()

    res = probe.fit(model, (x,), loss_fn, batches, validate, task,
                    _hp(max_steps=100, eval_every=5, patience=3), jax.random.PRNGKey(0), lambda *a: None)
    assert res.best_step == 10 and res.steps == 25
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, res.params), seen[1])


def test_early_stopping_waits_for_min_steps():
    """A head on a plateau (a CTC head emitting blanks) is not stopped before `min_steps`."""
    task = tasks.get("pr")
    model = heads.UtteranceClassifier(1, (3,))
    x = np.zeros((4, 1, 8), np.float32)

    def batches():
        while True:
            yield {"x": x}

    def loss_fn(p, b, key):
        return jnp.square(model.apply({"params": p}, b["x"])[0]).mean()

    plateau = iter([0.9] * 12 + [0.5] + [0.6] * 40)
    res = probe.fit(model, (x,), loss_fn, batches, lambda p: {"per": next(plateau)}, task,
                    _hp(max_steps=300, eval_every=5, patience=3, min_steps=100), jax.random.PRNGKey(0),
                    lambda *a: None)
    # Stale from step 10 on, the plateau ends at step 65; without min_steps it stops at 15.
    assert res.best_step == 65 and res.steps == 100 and len(res.curve) == 20


def test_learning_rate_grid_keeps_the_best_validated_fit():
    """`lrs`: one fit per rate, each from the same start and data order; the best valid wins."""
    task = tasks.get("ks")
    model = heads.UtteranceClassifier(1, (2,))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 8)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int32)
    orders = []

    def batches():
        order = np.random.default_rng(1)
        orders.append(order.integers(0, 64, 16))
        while True:
            idx = order.integers(0, 64, 16)
            yield {"x": x[idx], "y": y[idx]}

    def loss_fn(p, b, key):
        logits = model.apply({"params": p}, b["x"])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).mean()

    def validate(p):
        return {"acc": float((np.asarray(model.apply({"params": p}, x)[0]).argmax(-1) == y).mean())}

    tags = []
    res = probe.fit(model, (x,), loss_fn, batches, validate, task,
                    _hp(max_steps=40, eval_every=20, patience=2, lrs=(1e-6, 1e-1)), jax.random.PRNGKey(0),
                    lambda tag, v, s: tags.append(tag))
    assert set(res.grid) == {1e-6, 1e-1} and res.lr == 1e-1
    assert res.grid[1e-1]["acc"] > 0.9 > res.grid[1e-6]["acc"] and res.valid == res.grid[1e-1]
    assert validate(res.params)["acc"] == res.valid["acc"]
    assert len(orders) == 2 and (orders[0] == orders[1]).all()  # the same data order for each fit
    assert "ks/valid_acc@lr0.1" in tags and "ks/valid_acc@lr1e-06" in tags
