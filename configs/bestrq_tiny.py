"""BEST-RQ, tiny: configs/bestrq_base.py on the network and data shape of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/bestrq_tiny.py --workdir=runs/bestrq_tiny

Log-mel front end, 4 pre-LN blocks of d=128, 4 s crops, batches of 8, 800 steps at peak lr
1e-3; the random-projection quantizer of the paper with a smaller codebook for 1 h of speech
(1024 codes of 16 dimensions) and the tiny recipes' masks (5-frame spans, mask_prob 0.5).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    c.objective = load_config_module(os.path.join(_HERE, "bestrq_base.py")).objective_config()
    c.objective.codebook_size = 1024
    c.objective.mask_prob = 0.5
    c.objective.mask_length = 5
    c.objective.min_masks = 2
    return c
