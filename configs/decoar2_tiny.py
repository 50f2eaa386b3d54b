"""DeCoAR 2.0, tiny: configs/decoar2_paper.py on the data and schedule of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/decoar2_tiny.py --workdir=runs/decoar2_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 updates at peak lr 1e-3 with warm-up and
linear decay (as the other tiny recipes). Same objective as the paper (100 Hz log-mel, span
masking p = 0.065 x M = 10, Gumbel VQ between encoder and head, L1 + 0.1 x diversity).
Deviations for size: a 4-layer pre-LN Transformer, d=128, 4 heads, FFN 512, no dropout, with a
conv positional embedding over 8 frames in 8 groups (80 ms here; configs/w2v2_tiny.py explains
why short); 2 x 64 codebook entries and a Gumbel temperature decay that reaches its floor
within the run (configs/w2v2_tiny.py's).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    c.data.normalize = False  # the log-mel CMVN standardises
    paper = load_config_module(os.path.join(_HERE, "decoar2_paper.py"))
    tiny = load_config_module(os.path.join(_HERE, "mockingjay_tiny.py")).TINY
    c.model = paper.model_config(**tiny)
    c.objective = paper.objective_config(vq_codes=64, gumbel_temperature=(2.0, 0.5, 0.995))
    return c
