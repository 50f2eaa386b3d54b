"""Mockingjay, tiny: configs/mockingjay_paper.py on the data and schedule of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/mockingjay_tiny.py --workdir=runs/mockingjay_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 updates at peak lr 1e-3 with warm-up and
linear decay (as the other tiny recipes). Same objective as the paper (3 stacked log-mel frames,
15% in spans of 2 stacked frames, 80/10/10, L1 through the prediction head). Deviations for
size: a 4-layer pre-LN Transformer, d=128, 4 heads, FFN 512, no dropout, with a conv positional
embedding over 8 frames in 8 groups (240 ms here; configs/w2v2_tiny.py explains why short).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))
TINY = dict(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, layer_norm_first=True,
            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=8, dropout=0.0)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    c.data.normalize = False  # the log-mel CMVN standardises
    paper = load_config_module(os.path.join(_HERE, "mockingjay_paper.py"))
    c.model = paper.model_config(**TINY)
    c.objective = paper.objective_config()
    return c
