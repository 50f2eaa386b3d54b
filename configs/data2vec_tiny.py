"""data2vec (audio), tiny: configs/data2vec_base.py on the network and data of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/data2vec_tiny.py --workdir=runs/data2vec_tiny

Log-mel front end, 4 pre-LN blocks of d=128 with the 8-frame positional conv, 4 s crops,
batches of 8, 800 steps at peak lr 1e-3; the tiny recipes' masks (5-frame spans, mask_prob
0.5); targets from the top 3 of the 4 blocks (the paper's 8 of 12); a teacher that follows
the student faster for the short run (tau 0.99 -> 0.999 over the first 400 updates).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    c.objective = load_config_module(os.path.join(_HERE, "data2vec_base.py")).objective_config()
    o = c.objective
    o.mask_prob = 0.5
    o.mask_length = 5
    o.targets.top_k = 3
    o.ema.update(start=0.99, end=0.999, steps=400)
    return c
