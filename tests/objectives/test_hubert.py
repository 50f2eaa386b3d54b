"""Tests for ssl_jax/objectives/hubert.py and objectives/targets.py: target alignment,
padding invariance, overfitting one batch, 8 fake devices against one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from ssl_jax.objectives import targets
from ssl_jax.parallel import mesh as mesh_lib
from ssl_jax.parallel import sharding as sharding_lib
from tests.helpers import fitted, hubert_config, tones


def test_mfcc_targets_line_up_with_encoder_frames_under_padding():
    # Near-silence with a white-noise burst on exactly encoder frames [20, 30) (frame t covers
    # samples 320 t .. 320 t + 400): MFCC c0 (log energy) must rise on those frames only.
    samples, lo, hi = 16000, 20, 30
    rng = np.random.default_rng(0)
    x = (1e-4 * rng.standard_normal(samples)).astype(np.float32)
    x[lo * 320 + 80:(hi - 1) * 320 + 320] = 0.3 * rng.standard_normal((hi - 1 - lo) * 320 + 240)
    frames = (samples - 400) // 320 + 1
    c0 = np.asarray(targets.mfcc_frames(jnp.asarray(x[None]), jnp.asarray([samples]), frames))[0, :, 0]
    loud = c0 > 0.5 * (c0.max() + c0.min())
    assert np.flatnonzero(loud).tolist() == list(range(lo, hi)), np.flatnonzero(loud)
    # The same utterance inside a longer padded batch row gives the same frames.
    padded = np.zeros((2, samples + 3200), np.float32)
    padded[0, :samples] = x
    padded[1] = tones(1, samples + 3200)[0]
    f_pad = np.asarray(targets.mfcc_frames(jnp.asarray(padded), jnp.asarray([samples, samples + 3200]), frames + 10))
    f_one = np.asarray(targets.mfcc_frames(jnp.asarray(x[None]), jnp.asarray([samples]), frames))
    np.testing.assert_allclose(f_pad[0, : frames - 2], f_one[0, : frames - 2], atol=1e-3)


def test_loss_is_cross_entropy_against_assigned_clusters_on_masked_frames():
    cfg = hubert_config(clusters=(8, 5))
    audio = tones(2, 8000, seed=4)
    mask_audio = np.arange(8000)[None] < np.array([8000, 5600])[:, None]
    batch = {"audio": np.where(mask_audio, audio, 0.0).astype(np.float32), "audio_mask": mask_audio}
    obj = fitted(cfg, batch)
    params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))  # jitted: one program, not op by op
    state = nn.unbox(jax.jit(obj.init_state)(jax.random.key(1), batch))
    frames = obj.num_frames(8000)
    ids = jax.jit(obj.target_ids)(state, {k: jnp.asarray(v) for k, v in batch.items()})
    assert [int(i.max()) < k for i, k in zip(ids, (8, 5))] == [True, True]
    mask = np.zeros((2, frames), bool)
    mask[:, 3:9] = True
    b = dict(batch, mask_time_indices=mask)
    loss, m = jax.jit(lambda p, b: obj.loss(p, b, jax.random.key(2), 0, False, state))(params, b)
    projs, embs, out = jax.jit(lambda p, b: obj.module.apply({"params": p}, b["audio"], b["audio_mask"], b["mask_time_indices"],
                                                             deterministic=True))(params, b)
    valid = np.asarray(out.frame_mask) & mask
    expect = 0.0
    for proj, emb, target in zip(projs, embs, ids):
        p = np.asarray(proj) / np.linalg.norm(np.asarray(proj), axis=-1, keepdims=True)
        e = np.asarray(emb) / np.linalg.norm(np.asarray(emb), axis=-1, keepdims=True)
        logits = p @ e.T / 0.1
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        ce = -np.take_along_axis(logp, np.asarray(target)[..., None], -1)[..., 0]
        expect += ce[valid].mean()
    np.testing.assert_allclose(float(m["loss_masked"]), expect, rtol=1e-4)
    np.testing.assert_allclose(float(loss), expect + 10.0 * float(m["feature_penalty"]), rtol=1e-4)
    assert float(m["masked_frames"]) == valid.sum()


@pytest.mark.parametrize("name", ["hubert", "wavlm"])
def test_tiny_recipe_overfits_one_batch(name):
    cfg = hubert_config(clusters=(8,))
    clean = tones(2, 16000, seed=2)
    batch = {"audio": clean, "audio_mask": np.ones((2, 16000), bool)}
    if name == "wavlm":  # denoising: the input carries a segment of the other utterance
        cfg.objective.name = "wavlm"
        cfg.model.update(relative_position_buckets=16, relative_position_max_distance=64)
        cfg.data.augment.clean_copy = True
        mixed = clean.copy()
        mixed[0, 4000:8000] += 0.5 * clean[1, 8000:12000]
        batch = dict(batch, audio=mixed, clean_audio=clean)
    obj = fitted(cfg, dict(batch, audio=clean))
    assert type(obj).__name__ == {"hubert": "HubertObjective", "wavlm": "WavLMObjective"}[name]
    params = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))
    state = nn.unbox(jax.jit(obj.init_state)(jax.random.key(1), batch))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    tx = optax.adam(5e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, i):
        (loss, m), g = jax.value_and_grad(obj.loss, has_aux=True)(params, batch, jax.random.key(1), i, True, state)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, m

    first = None
    for i in range(120):
        params, opt_state, loss, m = step(params, opt_state, i)
        first = m if first is None else first
    assert float(m["loss_masked"]) < 0.3 * float(first["loss_masked"]), (first["loss_masked"], m["loss_masked"])
    assert float(m["accuracy"]) > 0.75 and float(first["accuracy"]) < 0.4


def test_eight_devices_match_one_device_for_a_hubert_step():
    assert jax.device_count() == 8
    cfg = hubert_config(clusters=(8,))
    audio = tones(8, 8000, seed=3)
    audio_mask = np.arange(8000)[None] < np.array([8000, 6400, 8000, 5000, 8000, 7000, 8000, 4000])[:, None]
    batch = {"audio": np.where(audio_mask, audio, 0.0).astype(np.float32), "audio_mask": audio_mask}
    obj = fitted(cfg, batch)
    boxed = jax.eval_shape(obj.init, jax.random.key(0), batch)
    params = jax.jit(lambda k: nn.unbox(obj.init(k, batch)))(jax.random.key(0))
    state = nn.unbox(obj.init_state(jax.random.key(1), batch))

    def loss_grad(p, s, b):
        return jax.value_and_grad(obj.loss, has_aux=True)(p, b, jax.random.key(1), 3, True, s)

    (ref_loss, ref_m), ref_g = jax.jit(loss_grad)(params, state, batch)
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    p_sh = sharding_lib.tree_shardings(boxed, mesh)
    s_sh = sharding_lib.tree_shardings(jax.eval_shape(obj.init_state, jax.random.key(1), batch), mesh)
    assert any(s.spec != P(*([None] * len(s.spec))) for s in jax.tree.leaves(p_sh))
    b_sh = sharding_lib.batch_shardings(batch, mesh)
    (loss, m), g = jax.jit(loss_grad, in_shardings=(p_sh, s_sh, b_sh), out_shardings=((None, None), p_sh))(
        jax.device_put(params, p_sh), jax.device_put(state, s_sh), sharding_lib.shard_batch(batch, mesh)
    )
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(m["accuracy"], ref_m["accuracy"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6), g, ref_g)
