"""WavLM BASE pretraining (Chen et al., 2022, "WavLM", Sec. III-IV): denoising masked prediction.

  python -m ssl_jax.train --config=configs/wavlm_base.py --workdir=runs/wavlm_base \
      --config.data.path=/data/librispeech_shards \
      --config.objective.targets.checkpoint=runs/hubert_base_it1

HuBERT BASE's network, objective and optimisation (configs/hubert_base.py) with: the gated
relative position bias in every Transformer layer (320 buckets, maximum distance 800, shared
across layers, as the released WavLM models), utterance mixing of the training crops (a
segment of another utterance of the batch, at most half the primary's length, primary-to-
secondary energy ratio uniform in [-5, 5] dB), and targets taken from the clean primary
(`data.augment.clean_copy`): 500 k-means clusters of a previous model's layer (the paper's
come from HuBERT BASE; `objective.targets.checkpoint` and `.layer` name yours); 400k updates
on LibriSpeech 960 h. The share of mixed utterances is a field (`data.augment.mix.prob`, 0.2
here).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def wavlm(c: config_dict.ConfigDict, buckets: int = 320, max_distance: int = 800, mix_prob: float = 0.2) -> None:
    """Turns a HuBERT recipe into WavLM in place: relative position bias, mixing, clean targets."""
    c.model.relative_position_buckets = buckets
    c.model.relative_position_max_distance = max_distance
    c.data.augment.mix.prob = mix_prob
    c.data.augment.clean_copy = True
    c.objective.name = "wavlm"


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "hubert_base.py")).get_config("iter2")
    wavlm(c)
    c.train.steps = 400_000
    c.optim.warmup_fraction = 32_000 / c.train.steps
    return c
