"""CPC, tiny: configs/cpc_paper.py on the data and schedule of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/cpc_tiny.py --workdir=runs/cpc_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 updates at peak lr 1e-3 (AdamW, warm-up,
linear decay, as the other tiny recipes). Same objective as the paper (K = 12 steps at 100 Hz,
InfoNCE, a one-layer LSTM of 256). Deviations: the log-mel front end (80 bands, 25 ms window,
10 ms hop, per-utterance CMVN) instead of the waveform conv encoder, for the reason
configs/w2v2_tiny.py gives (a waveform encoder learns far less in 800 CPU updates); the CMVN
statistics span the whole utterance, so every context frame sees them; 64 distractors
(4 s crops hold 400 frames, the paper's 1.28 s windows 128).
"""

import os

from ml_collections import config_dict

from ssl_jax.models.frame_encoder import Config
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    c.data.normalize = False  # the log-mel CMVN standardises
    c.model = config_dict.ConfigDict(Config(
        frontend="logmel", logmel_bins=80, logmel_window=400, logmel_hop=160, logmel_stack=1,
        logmel_norm="utterance", body="rnn", cell="lstm", hidden_size=256, num_layers=1).to_dict())
    c.objective = load_config_module(os.path.join(_HERE, "cpc_paper.py")).get_config().objective
    c.objective.num_negatives = 64
    return c
