"""Modified CPC (Rivière et al., 2020, "Unsupervised pretraining transfers well across
languages"; van den Oord et al., 2018), the CPC that SUPERB evaluates.

  python -m ssl_jax.train --config=configs/cpc_paper.py --workdir=runs/cpc \\
      --config.data.path=/data/librispeech100_shards

Paper (and the released CPC_audio defaults): a 5-layer conv encoder of 256 channels on the
waveform, kernels (10, 8, 4, 4, 4), strides (5, 4, 2, 2, 2) (100 Hz), channel-wise
normalisation; a one-layer LSTM of 256; K = 12 steps; 128 distractors; InfoNCE; Adam lr 2e-4
(betas 0.9, 0.999, eps 1e-8), windows of 20480 samples (1.28 s), 8 windows per GPU on 8 GPUs,
200 epochs of LibriSpeech train-clean-100 (about 880k updates of 64 windows; our estimate of
the epoch length). Deviations (objectives/cpc.py): a per-step linear predictor instead of the
one-layer Transformer, distractors from the same utterance instead of the same speaker, a
linear projection of the encoder output, LayerNorm as the channel norm; a constant lr after
a 1% linear warm-up (CPC_audio's optional ramp) and the base recipe's clipping at norm 10.
"""

import os

from ml_collections import config_dict

from ssl_jax.models.frame_encoder import Config
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.max_seconds = 1.28  # 20480-sample windows
    c.data.min_seconds = 1.28
    c.train.steps = 880_000
    c.train.batch_size = 64
    c.optim.lr = 2e-4
    c.optim.schedule = "constant"
    c.optim.warmup_fraction = 0.01
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.model = config_dict.ConfigDict(Config(
        frontend="conv", conv_dim=(256,) * 5, conv_kernel=(10, 8, 4, 4, 4), conv_stride=(5, 4, 2, 2, 2),
        feat_extract_norm="layer", body="rnn", cell="lstm", hidden_size=256, num_layers=1).to_dict())
    c.objective = config_dict.ConfigDict(dict(
        name="cpc",
        prediction_steps=12,  # K
        num_negatives=128,  # N, from the same utterance
    ))
    return c
