"""HuBERT BASE pretraining (Hsu et al., 2021, "HuBERT", Sec. IV-B/C), two iterations.

  python -m ssl_jax.train --config=configs/hubert_base.py --workdir=runs/hubert_base_it1 \
      --config.data.path=/data/librispeech_shards
  python -m ssl_jax.train --config=configs/hubert_base.py:iter2 --workdir=runs/hubert_base_it2 \
      --config.data.path=/data/librispeech_shards \
      --config.objective.targets.checkpoint=runs/hubert_base_it1

Paper: the wav2vec 2.0 BASE network (conv extractor 7x512, 12 post-LN blocks of d=768, FFN
3072, conv positional embedding 128 / 16 groups) with a final projection to 256 and one
learned embedding per cluster; cosine-similarity logits over temperature 0.1; loss on masked
frames only (unmasked weight 0) plus 10 x the feature penalty; masks of p=0.08 x l=10
(mask_prob 0.8); dropout 0.1 in the Transformer and on the extractor output, LayerDrop
0.05, feature-encoder gradient scale 0.1; Adam (0.9, 0.98, eps 1e-6), weight decay 0.01,
peak lr 5e-4, 32k warm-up updates then linear decay, clip norm 10.
Iteration 1: k-means with 100 clusters on 39-d MFCC (+ deltas, delta-deltas), 250k updates.
Iteration 2: 500 clusters on the 6th Transformer layer of the iteration-1 model, 400k updates.
Batch: 1.4M samples on each of 32 GPUs = 44.8M samples (0.78 h); in utterances of up to
250,240 samples, 176 = 44.0M (1.7% under; on 32 devices use 160 or 192).
k-means (the reference's learn_kmeans.py): mini-batches of 10,000 frames, k-means++ seeding,
no reassignment. Deviation: features are standardised per dimension before k-means (stats
from the seeding sample, stored with the centers); the reference clusters raw MFCCs, where
c0 dominates the distances.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def _w2v2_base():
    return load_config_module(os.path.join(_HERE, "w2v2_base.py"))


def targets_config(iteration: int) -> config_dict.ConfigDict:
    """`objective.targets`: what the k-means targets are clustered from and how they are fitted."""
    t = config_dict.ConfigDict()
    t.source = "mfcc" if iteration == 1 else "layer"  # "layer": a frozen checkpoint's hidden state
    t.checkpoint = ""  # source "layer": the previous iteration's run (workdir or step folder)
    t.layer = 6  # hidden_states index (0 = Transformer input)
    t.num_clusters = (100,) if iteration == 1 else (500,)  # one target set per entry
    t.normalize = "none"  # "utterance": CMVN of each utterance's frames before k-means
    t.codebook = ""  # a kmeans.npz from `python -m ssl_jax.cluster`; empty: fit at start, cached
    t.kmeans = config_dict.ConfigDict(dict(
        steps=100,  # mini-batch updates
        points_per_step=10_000,
        seed_points=30_000,  # k-means++ seeding sample (scikit-learn's 3 x batch)
        seed=0,
        reassignment_ratio=0.0,
    ))
    return t


def objective_config(iteration: int) -> config_dict.ConfigDict:
    o = config_dict.ConfigDict()
    o.name = "hubert"
    o.mask_prob = 0.8
    o.mask_length = 10
    o.min_masks = 2
    o.final_dim = 256
    o.untie_final_proj = True  # one projection per target set
    o.logit_temperature = 0.1
    o.unmasked_weight = 0.0
    o.feature_penalty_weight = 10.0
    o.targets = targets_config(iteration)
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    iteration = {None: 1, "": 1, "iter1": 1, "iter2": 2}.get(arg)
    if iteration is None:
        raise ValueError(f"configs/hubert_base.py takes 'iter1' or 'iter2', got {arg!r}")
    c = _w2v2_base().get_config()
    c.train.steps = 250_000 if iteration == 1 else 400_000
    c.train.batch_size = 176
    c.optim.lr = 5e-4
    c.optim.warmup_fraction = 32_000 / c.train.steps
    c.optim.clip_norm = 10.0
    c.model.feat_quantizer_dropout = 0.0  # no quantizer
    c.objective = objective_config(iteration)
    return c
