"""Discrete BERT, tiny: configs/discrete_bert_base.py on the network and data shape of
configs/w2v2_tiny.py (4 pre-LN blocks of d=128, 4 s crops, batches of 8, 800 steps at peak lr
1e-3), over the 100 MFCC k-means units of configs/hubert_tiny.py (the same cached codebook),
embedded in 128 dimensions, with the tiny recipes' masks (5-frame spans, mask_prob 0.5).

  python -m ssl_jax.train --config=configs/discrete_bert_tiny.py --workdir=runs/discrete_bert_tiny
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    load_config_module(os.path.join(_HERE, "discrete_bert_base.py")).discrete_bert(c, 100)
    hubert = load_config_module(os.path.join(_HERE, "hubert_tiny.py")).get_config()
    c.objective.targets = hubert.objective.targets
    c.model.unit_dim = 128
    c.objective.mask_prob = 0.5
    c.objective.mask_length = 5
    return c
