"""Builders shared by several test modules: tiny recipes and test signals."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import kmeans, objectives
from ssl_jax.objectives import targets
from ssl_jax.training.config_check import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**model):
    c = load_config_file(os.path.join(ROOT, "configs", "w2v2_tiny.py"))
    c.model.frontend = "conv"  # the paper's front end; tests of the log-mel one say so
    c.train.abx_probe.speakers = 0
    c.model.conv_dim = (16,) * 7
    c.model.hidden_size = 32
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.intermediate_size = 64
    c.model.num_conv_pos_embeddings = 8
    c.model.num_conv_pos_embedding_groups = 4
    c.model.num_codevectors_per_group = 16
    c.model.codevector_dim = 16
    c.model.proj_codevector_dim = 16
    c.objective.num_negatives = 5
    c.objective.mask_length = 4
    c.objective.min_masks = 2
    c.model.update(model)
    return c


def multiprocess_config(corpus: str, cache: str, steps: int):
    """A tiny log-mel wav2vec 2.0 run on mesh data=2 x fsdp=rest (tests/test_multiprocess.py;
    its processes load this through a config file)."""
    c = tiny_config(frontend="logmel")  # compiles faster than the conv front end
    c.data.path = corpus
    c.data.max_seconds, c.data.min_seconds, c.data.num_buckets = 1.0, 0.5, 1
    c.train.steps, c.train.batch_size, c.train.log_every = steps, 8, 1
    c.train.eval_every, c.train.eval_batches, c.train.checkpoint_every = 0, 0, 100
    c.train.compilation_cache = cache
    c.mesh.data, c.mesh.fsdp = 2, -1
    return c


def tones(num: int, samples: int, seed: int = 0) -> np.ndarray:
    """Piecewise tones (a new random pitch every 40 ms): frames that are easy to tell apart."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    seg = (np.arange(samples) // 640)
    out = []
    for _ in range(num):
        f = rng.uniform(100, 3000, size=seg.max() + 1)[seg]
        out.append(np.sin(2 * np.pi * np.cumsum(f) / 16000.0) + 0.05 * rng.standard_normal(samples))
    return np.stack(out).astype(np.float32) * (0.5 + 0.0 * t)


def hubert_config(clusters=(8,), **model):
    c = tiny_config(**model)
    h = load_config_file(f"{ROOT}/configs/hubert_tiny.py")
    c.objective = h.objective
    c.objective.final_dim = 16
    c.objective.mask_length = 4
    c.objective.targets.num_clusters = clusters
    return c


def fitted(cfg, batch, seed=0):
    """The objective with codebooks fitted on `batch`'s own MFCC frames (no I/O)."""
    obj = objectives.build(cfg)
    frames = obj.num_frames(batch["audio"].shape[1])
    lengths = jnp.asarray(batch["audio_mask"]).sum(-1)
    f = np.asarray(targets.mfcc_frames(jnp.asarray(batch["audio"]), lengths, frames))
    valid = np.asarray(obj.frame_lengths({"audio_mask": jnp.asarray(batch["audio_mask"])}))
    pts = np.concatenate([f[b, : valid[b]] for b in range(len(valid))])
    mean, std = pts.mean(0), pts.std(0) + 1e-5
    z = (pts - mean) / std
    centers = [np.asarray(kmeans.kmeans_plus_plus(jax.random.key(seed + i), jnp.asarray(z), k)) for i, k in enumerate(obj.num_classes)]
    obj.codebooks = kmeans.Codebooks(mean=mean.astype(np.float32), std=std.astype(np.float32), centers=centers, meta={})
    return obj


def d2v_config(name: str = "data2vec"):
    c = load_config_file(f"{ROOT}/configs/{name}_tiny.py")
    c.model.update(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_conv_pos_embedding_groups=4)
    c.objective.targets.top_k = 2
    if name == "data2vec2":
        c.objective.decoder.update(dim=32, groups=4)
        c.objective.num_masks = 2
    return c
