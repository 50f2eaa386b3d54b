"""NPC (Liu, Chung and Glass, 2021, "Non-Autoregressive Predictive Coding for Learning Speech
Representations from Local Dependencies", Sec. 2-3).

  python -m ssl_jax.train --config=configs/npc_paper.py --workdir=runs/npc \\
      --config.data.path=/data/librispeech360_shards

Paper: 80-d log-mel (25 ms window, 10 ms hop, per-utterance CMVN); 4 conv blocks of 512 units,
masked convolutions of width 15 with an input mask of 5 frames (the hidden centre grows by 2
per block), their sum quantised by 4 Gumbel-softmax groups of 64 codes (128 dims each,
temperature 1.0), a linear postnet to the 80 bands; L1 loss on every frame; dropout 0.1;
Adam lr 1e-3, batches of 32 utterances, 100 epochs of LibriSpeech train-clean-360 (about 325k
updates at 32 x ~12 s).
Deviations: the frame encoder's (models/frame_encoder.py: LayerNorm instead of BatchNorm, a
linear projection to 512 before the first block, dropout after each block); the data section
is the wav2vec 2.0 recipe's (crops of at most 15.6 s; the paper trains on whole utterances),
and the schedule is its linear warm-up and decay (the paper keeps lr constant).
"""

import os

from ml_collections import config_dict

from ssl_jax.models import frame_encoder
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def model_config(**overrides) -> config_dict.ConfigDict:
    """The frame encoder with the paper's NPC body, `overrides` applied."""
    fields = dict(frontend="logmel", logmel_bins=80, logmel_window=400, logmel_hop=160, logmel_stack=1,
                  logmel_norm="utterance", body="npc", hidden_size=512, num_layers=4, npc_kernel=15, npc_mask=5,
                  dropout=0.1, vq_layer=-1)
    return config_dict.ConfigDict(frame_encoder.Config(**{**fields, **overrides}).to_dict())


def objective_config() -> config_dict.ConfigDict:
    return config_dict.ConfigDict(dict(
        name="npc",
        vq_groups=4,  # 0: no VQ; each group reads and replaces hidden_size / vq_groups dims
        vq_codes=64,
        vq_temperature=1.0,  # Gumbel-softmax, constant
        # Spread of the predictions over frames (CMVN targets: about 1); 0 = every frame the mean.
        collapse=config_dict.ConfigDict(dict(pred_std=0.1)),
    ))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.min_seconds = 1.0
    c.data.normalize = False  # the log-mel CMVN standardises
    c.train.steps = 325_000
    c.train.batch_size = 32
    c.optim.lr = 1e-3
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.model = model_config()
    c.objective = objective_config()
    return c
