"""NPC, tiny: configs/npc_paper.py on the data and schedule of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/npc_tiny.py --workdir=runs/npc_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 updates at peak lr 1e-3 (AdamW with warm-up
and linear decay, as the other tiny recipes). Same objective as the paper (4 blocks, masked
convolutions of width 15 with a 5-frame input mask at 100 Hz, 4 x 64 Gumbel VQ, L1 on CMVN
log-mel); deviation for size: 256 units instead of 512 (so 64 dims per VQ group).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    c.data.normalize = False  # the log-mel CMVN standardises
    paper = load_config_module(os.path.join(_HERE, "npc_paper.py"))
    c.model = paper.model_config(hidden_size=256)
    c.objective = paper.objective_config()
    return c
