"""WavLM BASE+ (Chen et al., 2022): configs/wavlm_base.py on 94k hours of varied speech
(Libri-Light, GigaSpeech, VoxPopuli in the paper) for 1M updates, with noise added as well as
other utterances (the paper uses DNS-challenge noise; here the coloured noise and babble
transforms of `data.augment`, each on 10% of utterances).

  python -m ssl_jax.train --config=configs/wavlm_base_plus.py --workdir=runs/wavlm_base_plus \
      --config.data.path=/data/mix94k_shards --config.objective.targets.checkpoint=runs/hubert_base_it1
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "wavlm_base.py")).get_config()
    c.train.steps = 1_000_000
    c.optim.warmup_fraction = 32_000 / c.train.steps
    c.data.augment.noise.prob = 0.1
    c.data.augment.babble.prob = 0.1
    return c
