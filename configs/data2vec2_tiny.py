"""data2vec 2.0 (audio), tiny: configs/data2vec2_base.py on the network and data of
configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/data2vec2_tiny.py --workdir=runs/data2vec2_tiny

Log-mel front end, 4 pre-LN blocks of d=128, 4 s crops, batches of 8 at peak lr 1e-3, as
configs/data2vec_tiny.py (top 3 of 4 blocks, teacher tau 0.99 -> 0.999 over 400 updates);
4 masked copies per teacher pass and a decoder of 2 conv blocks of width 128 (kernel 7, 8
groups), 1,600 steps (about 30 min on 2 CPU cores). On superb_tiny, 1,600 steps beat FBANK
significantly on PR 42.8, KS 80.0, IC 36.7, ER 57.6 and word ABX 4.8% (FBANK 45.1, 69.8, 11.5,
53.0, 9.3%); 800 steps gave PR 42.6, KS 77.8, IC 38.6, ER 54.2 (not significant), 400 steps
PR 43.1, KS 72.5, IC 32.7.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "data2vec_tiny.py")).get_config()
    o = load_config_module(os.path.join(_HERE, "data2vec2_base.py")).objective_config()
    o.targets = c.objective.targets
    o.ema = c.objective.ema
    o.num_masks = 4
    o.decoder.update(dim=128, groups=8, layers=2)
    c.objective = o
    c.train.steps = 1600
    return c
