"""VQ-VAE, tiny: configs/vqvae_paper.py on the data and schedule of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/vqvae_tiny.py --workdir=runs/vqvae_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 updates at peak lr 1e-3 (AdamW with warm-up
and linear decay, as the other tiny recipes; the paper's 2e-4 is for 250k updates). Same
objective as the paper recipe (K = 256 entries of 64 dims, beta = 0.25, MSE reconstruction of
stacked CMVN log-mel frames at 50 Hz); deviations for size: encoder and decoder 256 units wide
(4 and 3 non-causal conv layers) instead of 768.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    c.data.normalize = False  # the log-mel CMVN standardises
    paper = load_config_module(os.path.join(_HERE, "vqvae_paper.py"))
    c.model = paper.model_config(hidden_size=256)
    c.objective = paper.objective_config(decoder_hidden=256)
    return c
