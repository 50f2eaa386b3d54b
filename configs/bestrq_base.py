"""BEST-RQ pretraining (Chiu et al., 2022, "Self-supervised learning with random-projection
quantizer for speech recognition"), at the wav2vec 2.0 BASE size.

  python -m ssl_jax.train --config=configs/bestrq_base.py --workdir=runs/bestrq_base \
      --config.data.path=/data/librispeech_shards

Paper: 80-d log-mel input, normalised; a frozen Xavier-initialised projection to 16 dimensions
and a frozen codebook of 8192 standard-normal vectors, matched by cosine (one codebook for
LibriSpeech, several in later work); masks start at each frame with probability 0.01 and last
400 ms; cross-entropy on masked frames; a 0.6B Conformer on 40 ms frames.
This recipe: the log-mel front end (two stacked 10 ms frames = 20 ms, the projection's input
is those 160 values), the BASE Transformer (12 x 768, post-LN, conv positional embedding),
masks of 20 frames (400 ms) with mask_prob 0.2 (= 0.01 x 20 in the fairseq convention used
by every recipe here), and the BASE optimisation and batch of configs/w2v2_base.py. The
Conformer is not built yet; the network is the deviation.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def objective_config() -> config_dict.ConfigDict:
    o = config_dict.ConfigDict()
    o.name = "bestrq"
    o.mask_prob = 0.2
    o.mask_length = 20
    o.min_masks = 1
    o.num_codebooks = 1
    o.codebook_size = 8192
    o.code_dim = 16
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.model.frontend = "logmel"
    c.model.feat_quantizer_dropout = 0.0  # no learned quantizer
    c.data.normalize = False  # the targets standardise log-mel frames per utterance
    c.objective = objective_config()
    return c
