"""BYOL-A, tiny: configs/byola_base.py (v2) on the data and schedule of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/byola_tiny.py --workdir=runs/byola_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 steps at peak lr 1e-3 (AdamW, warm-up, linear
decay, as the other tiny recipes); the v2 augmentations, heads and EMA (0.99) of the paper.
Deviations for speech probing and a CPU: a 25 ms window (speech frames; the paper's 64 ms
smears phones), 32-channel conv blocks, time pooling only in the first block (50 Hz frames, as
the other recipes; the paper pools time by 2 in both blocks, 25 Hz), an MLP of 512 -> 512
concatenated with the 512 conv features (d = 1024), a projector and predictor of 1024 -> 256
hidden units, and a memory bank of 64 segments (8 batches; the paper's 512 is 2 of its batches).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    base = load_config_module(os.path.join(_HERE, "byola_base.py"))
    c.data.normalize = False  # the encoder standardises its log-mel input
    c.model = base.model_config(2)
    m = c.model
    m.logmel_window = 400  # 25 ms
    m.conv_channels = 32
    m.time_pool = (2, 1)  # 50 Hz frames (docstring)
    m.mlp_hidden = 512
    m.hidden_size = 1024  # 512 conv features + 512
    c.objective = base.objective_config(2)
    o = c.objective
    o.projector_hidden = 1024
    o.augment.bank_size = 64
    return c
