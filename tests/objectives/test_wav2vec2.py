"""Tests for ssl_jax/objectives/wav2vec2.py: logits, padding invariance, overfitting one batch."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax import objectives
from ssl_jax.objectives import masking
from ssl_jax.objectives.wav2vec2 import contrastive_logits
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT, tiny_config, tones

def test_registry_knows_wav2vec2():
    assert objectives.get("wav2vec2").__name__ == "Wav2Vec2Objective"
    with pytest.raises(KeyError, match="registered"):
        objectives.get("no_such_objective")


def test_logits_positive_first_and_equal_targets_blocked():
    rng = np.random.default_rng(0)
    c = jnp.asarray(rng.standard_normal((2, 6, 4)), jnp.float32)
    q = jnp.asarray(rng.standard_normal((2, 6, 4)), jnp.float32)
    q = q.at[0, 3].set(q[0, 1] * 2.0)  # same direction as frame 1: an identical code after normalising
    idx = jnp.asarray(np.tile(np.array([1, 2, 3])[None, None], (2, 6, 1)))
    logits = np.asarray(contrastive_logits(c, q, idx, kappa=0.5))
    cn = c / jnp.linalg.norm(c, axis=-1, keepdims=True)
    qn = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    np.testing.assert_allclose(logits[1, 4, 0], float(cn[1, 4] @ qn[1, 4]) / 0.5, rtol=1e-5)
    np.testing.assert_allclose(logits[1, 4, 2], float(cn[1, 4] @ qn[1, 2]) / 0.5, rtol=1e-5)
    assert np.isneginf(logits[0, 1, 3]) and np.isneginf(logits[0, 3, 1])  # distractor equal to the positive
    assert np.isfinite(logits[0, 1, [0, 2]]).all()


def test_zero_vectors_have_finite_gradients():
    # A silent or padded frame can give an all-zero context or target vector.
    rng = np.random.default_rng(0)
    c = jnp.asarray(rng.standard_normal((1, 4, 3)), jnp.float32).at[0, 2].set(0.0)
    q = jnp.asarray(rng.standard_normal((1, 4, 3)), jnp.float32).at[0, 1].set(0.0)
    idx = jnp.asarray(np.tile(np.array([1, 3])[None, None], (1, 4, 1)))

    def loss(c, q):
        logits = contrastive_logits(c, q, idx, kappa=0.1)
        return jnp.sum(jax.nn.logsumexp(logits, -1) - logits[..., 0])

    gc, gq = jax.grad(loss, argnums=(0, 1))(c, q)
    assert np.isfinite(np.asarray(gc)).all() and np.isfinite(np.asarray(gq)).all()
    assert np.abs(np.asarray(gc[0, 2])).sum() > 0  # the zero frame still learns


@pytest.fixture(scope="module")
def layer_norm_objective():
    cfg = tiny_config(feat_extract_norm="layer", conv_bias=True)
    obj = objectives.build(cfg)
    batch = {"audio": jnp.zeros((2, 16000)), "audio_mask": jnp.ones((2, 16000), bool)}
    params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
    return obj, params


def test_padding_invariance_layer_norm_extractor(layer_norm_objective):
    obj, params = layer_norm_objective
    wav = tones(2, 16000, seed=1)
    lengths = np.array([16000, 11200])
    frames = int(obj.num_frames(16000))
    frame_len = np.asarray(obj.frame_lengths({"audio_mask": jnp.asarray(np.arange(16000)[None] < lengths[:, None])}))
    mask = masking.span_mask(jax.random.key(3), jnp.asarray(frame_len), frames, mask_prob=0.5, mask_length=4, min_masks=2)
    neg, _ = masking.sample_negatives(jax.random.key(4), mask, 5)
    mask, neg = np.asarray(mask), np.asarray(neg)

    loss = jax.jit(lambda batch: obj.loss(params, batch, jax.random.key(9), 0, False))  # one program per shape

    def loss_of(audio, audio_mask, m, n):
        return loss({"audio": jnp.asarray(audio), "audio_mask": jnp.asarray(audio_mask), "mask_time_indices": m, "negative_indices": n})

    # Batch of both, item 1 padded; versus extra padding on both items.
    pad = 4800
    audio_mask = np.arange(16000)[None] < lengths[:, None]
    audio = np.where(audio_mask, wav, 0.0)
    base_loss, base_m = loss_of(audio, audio_mask, mask, neg)
    extra = int(obj.num_frames(16000 + pad)) - frames
    audio_p = np.pad(audio, ((0, 0), (0, pad)))
    audio_p[:, 16000:] = 7.0  # garbage beyond the mask must not matter
    padded_loss, padded_m = loss_of(audio_p, np.pad(audio_mask, ((0, 0), (0, pad))), np.pad(mask, ((0, 0), (0, extra))), np.pad(neg, ((0, 0), (0, extra), (0, 0))))
    np.testing.assert_allclose(padded_loss, base_loss, rtol=2e-5)
    for k in ("contrastive", "accuracy", "perplexity", "feature_penalty"):
        np.testing.assert_allclose(padded_m[k], base_m[k], rtol=2e-5, atol=1e-6)

    # Item 1 alone, unpadded (11200 samples), versus item 1 padded to 16000 in a batch of one.
    f1 = int(frame_len[1])
    alone_loss, _ = loss_of(wav[1:, :11200], np.ones((1, 11200), bool), mask[1:, :f1], neg[1:, :f1])
    in_pad_loss, _ = loss_of(audio[1:], audio_mask[1:], mask[1:], neg[1:])
    np.testing.assert_allclose(in_pad_loss, alone_loss, rtol=2e-5)


def test_tiny_model_overfits_one_batch():
    cfg = tiny_config()
    obj = objectives.build(cfg)
    batch = {"audio": jnp.asarray(tones(2, 16000, seed=2)), "audio_mask": jnp.ones((2, 16000), bool)}
    params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, i):
        (loss, m), g = jax.value_and_grad(obj.loss, has_aux=True)(params, batch, jax.random.key(1), i, True)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, m

    first = None
    for i in range(150):
        params, opt_state, loss, m = step(params, opt_state, i)
        first = m if first is None else first
    assert float(m["contrastive"]) < 0.3 * float(first["contrastive"]), (first["contrastive"], m["contrastive"])
    assert float(m["accuracy"]) > 0.9
    assert float(first["accuracy"]) < 0.5


def test_perplexity_and_diversity_over_masked_frames_only(layer_norm_objective):
    obj, params = layer_norm_objective
    lengths = np.array([16000, 9600])
    audio_mask = np.arange(16000)[None] < lengths[:, None]
    audio = np.where(audio_mask, tones(2, 16000, seed=5), 0.0)
    frame_len = obj.frame_lengths({"audio_mask": jnp.asarray(audio_mask)})
    mask = masking.span_mask(jax.random.key(2), frame_len, obj.num_frames(16000), mask_prob=0.5, mask_length=4, min_masks=2)
    batch = {"audio": jnp.asarray(audio), "audio_mask": jnp.asarray(audio_mask), "mask_time_indices": mask}
    _, m = obj.loss(params, batch, jax.random.key(9), 0, False)

    out = obj.module.apply(
        {"params": params}, batch["audio"], batch["audio_mask"],
        method=lambda mdl, w, a: mdl.encoder(w, a, mask_time_indices=mask, deterministic=True),
    )
    w = params["quantizer"]["weight_proj"]
    g, v = obj.encoder_config.num_codevector_groups, obj.encoder_config.num_codevectors_per_group
    probs = np.asarray(jax.nn.softmax((out.features @ w["kernel"] + w["bias"]).reshape(2, -1, g, v), -1))

    def perplexity(frames):
        marginal = probs[frames].mean(0)
        return np.exp(-(marginal * np.log(marginal + 1e-7)).sum(-1)).sum()

    masked = np.asarray(mask) & np.asarray(out.frame_mask)
    np.testing.assert_allclose(m["perplexity"], perplexity(masked), rtol=1e-5)
    np.testing.assert_allclose(m["diversity"], (g * v - perplexity(masked)) / (g * v), rtol=1e-5)
    assert abs(perplexity(np.asarray(out.frame_mask)) - perplexity(masked)) > 1e-3  # the choice matters here


def test_quantizer_dropout_reaches_only_the_quantizer_input():
    batch = {"audio": jnp.asarray(tones(2, 4800, seed=3)), "audio_mask": jnp.ones((2, 4800), bool)}
    plain, dropped = objectives.build(tiny_config()), objectives.build(tiny_config(feat_quantizer_dropout=0.5))
    assert plain.encoder_config.feat_quantizer_dropout == 0.0  # the tiny recipe has no dropout
    params = nn.unbox(plain.init(jax.random.key(0), batch))
    mask = jnp.asarray(np.arange(plain.num_frames(4800))[None] % 3 == 0).repeat(2, 0)

    def run(obj, deterministic):
        return obj.module.apply(
            {"params": params}, batch["audio"], batch["audio_mask"], mask, temperature=2.0,
            deterministic=deterministic, rngs={"gumbel": jax.random.key(1), "dropout": jax.random.key(2)},
        )

    a, b = run(plain, False), run(dropped, False)
    np.testing.assert_array_equal(a["context"], b["context"])  # the Transformer's input is untouched
    assert not np.allclose(a["targets"], b["targets"]) and float(a["perplexity"]) != float(b["perplexity"])
    a, b = run(plain, True), run(dropped, True)
    np.testing.assert_array_equal(a["targets"], b["targets"])
    np.testing.assert_array_equal(a["perplexity"], b["perplexity"])


def _padded_batch_samples(cfg) -> int:
    from ssl_jax.data.pipeline import bucket_lengths

    longest = bucket_lengths(int(round(cfg.data.max_seconds * 16000)), cfg.data.num_buckets)[-1]
    return cfg.train.batch_size * longest


def test_recipes_batch_the_papers_samples_per_update():
    base = load_config_file(os.path.join(ROOT, "configs", "w2v2_base.py"))
    # Baevski et al. (2020), Sec. 4.2: at most 1.4M samples per GPU on 64 GPUs (BASE), 1.2M on 128 (LARGE).
    assert abs(_padded_batch_samples(base) / (1.4e6 * 64) - 1) < 0.02
    assert base.model.feat_quantizer_dropout == 0.1 and base.data.max_seconds * 16000 == 250_000
    for variant in ("lv60k", "ls960"):
        large = load_config_file(os.path.join(ROOT, "configs", f"w2v2_large.py:{variant}"))
        assert abs(_padded_batch_samples(large) / (1.2e6 * 128) - 1) < 0.02
        assert large.data.max_seconds * 16000 == 320_000


def test_large_variants_follow_the_paper():
    path = os.path.join(ROOT, "configs", "w2v2_large.py")
    default, lv, ls = (load_config_file(path + arg) for arg in ("", ":lv60k", ":variant=ls960"))
    assert default.to_dict() == lv.to_dict()
    assert (lv.train.steps, ls.train.steps) == (600_000, 250_000)
    assert (lv.model.layerdrop, ls.model.layerdrop) == (0.0, 0.2)
    assert (lv.objective.feature_penalty_weight, ls.objective.feature_penalty_weight) == (0.0, 10.0)
    assert (lv.model.feature_grad_scale, ls.model.feature_grad_scale) == (1.0, 0.1)
    assert (lv.model.feat_extract_norm, ls.model.feat_extract_norm) == ("layer", "group")
    assert (lv.model.layer_norm_first, ls.model.layer_norm_first) == (True, False)
    assert (lv.data.normalize, ls.data.normalize) == (True, False)
    for c in (lv, ls):
        assert c.optim.lr == 3e-4 and c.objective.gumbel_temperature == (2.0, 0.1, 0.999995)
        assert (c.model.hidden_size, c.model.num_layers, c.model.codevector_dim) == (1024, 24, 768)
    with pytest.raises(ValueError, match="lv60k, ls960"):
        load_config_file(path + ":ls60k")
