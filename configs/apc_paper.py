"""APC (Chung et al., 2019, "An Unsupervised Autoregressive Model for Speech Representation
Learning", Sec. 3-4).

  python -m ssl_jax.train --config=configs/apc_paper.py --workdir=runs/apc \\
      --config.data.path=/data/librispeech360_shards

Paper: 80-d log-mel (25 ms window, 10 ms hop; per-utterance CMVN as the authors' later code),
3 unidirectional GRU layers of 512 with residual connections between consecutive layers, a
linear postnet to 80-d, L1 loss of the frame n = 3 steps ahead; Adam lr 1e-3, batches of 32
utterances, 100 epochs of LibriSpeech train-clean-360 (about 325k updates at 32 x ~12 s).
Deviations: the data section is the wav2vec 2.0 recipe's (crops of at most 15.6 s; the paper
trains on whole utterances), and the schedule is its linear warm-up and decay (the paper uses
a constant lr).
"""

import os

from ssl_jax.models.frame_encoder import model_config
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None):
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.min_seconds = 1.0
    c.train.steps = 325_000
    c.train.batch_size = 32
    c.optim.lr = 1e-3
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.model = model_config(frontend="logmel", logmel_bins=80, logmel_stack=1, logmel_norm="utterance",
                           body="rnn", cell="gru", hidden_size=512, num_layers=3, dropout=0.0)
    c.objective = objective_config()
    return c


def objective_config():
    from ml_collections import config_dict

    return config_dict.ConfigDict(dict(
        name="apc",
        shift=3,  # n: predict the frame this many 10 ms steps ahead
        gumbel_temperature=(1.0, 1.0, 1.0),  # VQ-APC only: start, floor, decay per update
    ))
