"""VQ-VAE on log-mel frames (van den Oord et al., 2017, "Neural Discrete Representation
Learning"; speech sizes of Chorowski et al., 2019, "Unsupervised Speech Representation Learning
Using WaveNet Autoencoders", Sec. IV-V).

  python -m ssl_jax.train --config=configs/vqvae_paper.py --workdir=runs/vqvae \\
      --config.data.path=/data/librispeech_shards

Followed: Chorowski et al.'s speech VQ-VAE for the sizes (768-unit ReLU conv encoder with
residual connections and one stride-2 reduction, so the latents come at 50 Hz from 100 Hz
features; a codebook of K = 256 entries of 64 dims); van den Oord et al. for the quantiser
(nearest entry, straight-through gradient, codebook loss, commitment weight beta = 0.25) and
the optimiser (Adam, lr 2e-4, batches of 128, 250k updates).
Deviations: 80-d log-mel with per-utterance CMVN instead of MFCCs; the stride-2 reduction is
two stacked 10 ms log-mel frames (`logmel_stack = 2`); the encoder is the frame encoder's
non-causal conv body (4 residual layers of width 3 with LayerNorm); the decoder is 3 non-causal
conv layers of 768 reconstructing the stacked log-mel frames (MSE), not a WaveNet on the
waveform, and it is not conditioned on the speaker; no time-jitter regularisation; the data
section is the wav2vec 2.0 recipe's (crops of at most 15.6 s) with its linear warm-up and decay.
"""

import os

from ml_collections import config_dict

from ssl_jax.models import frame_encoder
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def model_config(**overrides) -> config_dict.ConfigDict:
    """The frame encoder with a non-causal conv body, `overrides` applied."""
    fields = dict(frontend="logmel", logmel_bins=80, logmel_window=400, logmel_hop=160, logmel_stack=2,
                  logmel_norm="utterance", body="conv", causal=False, conv_context_kernel=3, hidden_size=768,
                  num_layers=4, dropout=0.0, vq_layer=-1)
    return config_dict.ConfigDict(frame_encoder.Config(**{**fields, **overrides}).to_dict())


def objective_config(decoder_hidden: int = 768) -> config_dict.ConfigDict:
    return config_dict.ConfigDict(dict(
        name="vqvae",
        num_codes=256,  # K
        code_dim=64,  # D; the encoder output is projected to it
        commitment_weight=0.25,  # beta
        decoder=config_dict.ConfigDict(dict(hidden_size=decoder_hidden, num_layers=3, kernel=3)),
    ))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.min_seconds = 1.0
    c.data.normalize = False  # the log-mel CMVN standardises
    c.train.steps = 250_000
    c.train.batch_size = 128
    c.optim.lr = 2e-4
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.model = model_config()
    c.objective = objective_config()
    return c
