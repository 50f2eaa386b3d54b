"""APC, tiny: configs/apc_paper.py on the data and schedule of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/apc_tiny.py --workdir=runs/apc_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 updates at peak lr 1e-3 (AdamW with warm-up
and linear decay, as the other tiny recipes). Same objective as the paper (n = 3 at 100 Hz,
L1, residual unidirectional GRUs on CMVN log-mel); deviations for size: 3 GRU layers of 256
instead of 512.
"""

import os

from ssl_jax.models.frame_encoder import model_config
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None):
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    c.data.normalize = False  # the log-mel CMVN standardises
    paper = load_config_module(os.path.join(_HERE, "apc_paper.py")).get_config()
    c.model = model_config(**{**paper.model.to_dict(), "hidden_size": 256})
    c.objective = paper.objective
    return c
