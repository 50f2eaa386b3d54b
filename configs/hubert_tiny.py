"""HuBERT, tiny: configs/hubert_base.py shrunk to learn visibly on 2 CPU cores in minutes.

  python -m ssl_jax.train --config=configs/hubert_tiny.py --workdir=runs/hubert_tiny_it1
  python -m ssl_jax.cluster --config=configs/hubert_tiny.py:iter2 --workdir=runs/kmeans_tiny_it2 \
      --config.objective.targets.checkpoint=runs/hubert_tiny_it1       # optional: PNMI report
  python -m ssl_jax.train --config=configs/hubert_tiny.py:iter2 --workdir=runs/hubert_tiny_it2 \
      --config.objective.targets.checkpoint=runs/hubert_tiny_it1

The first command fits the iteration-1 k-means on MFCC frames of the embedded corpus before it
trains (logged; cached beside the corpus, so later runs reuse it). The second iteration
clusters a layer of the first model's encoder, which runs frozen inside every step to give
the targets. Same network and data shape as configs/w2v2_tiny.py (log-mel front end, 4
pre-LN blocks of d=128, 4 s crops, batches of 8, 800 steps at peak lr 1e-3); HuBERT's head
(final projection to 64, cosine logits over 0.1, masked frames only), shorter mask spans as
the tiny wav2vec 2.0 recipe (5 frames, mask_prob 0.5), and a quicker k-means (40 updates of
4,096 frames).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    iteration = {None: 1, "": 1, "iter1": 1, "iter2": 2}.get(arg)
    if iteration is None:
        raise ValueError(f"configs/hubert_tiny.py takes 'iter1' or 'iter2', got {arg!r}")
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    hubert = load_config_module(os.path.join(_HERE, "hubert_base.py"))
    c.objective = hubert.objective_config(iteration)
    o = c.objective
    o.mask_prob = 0.5
    o.mask_length = 5
    o.final_dim = 64
    t = o.targets
    t.num_clusters = (100,)
    t.layer = 2
    t.kmeans.steps = 40
    t.kmeans.points_per_step = 4096
    t.kmeans.seed_points = 8192
    return c
