"""WavLM, tiny: configs/hubert_tiny.py (iteration 1, MFCC k-means targets fitted at the start)
made WavLM: gated relative position bias (64 buckets, maximum distance 200 frames = 4 s, the
crop), utterance mixing of 20% of the crops, targets from the clean primary.

  python -m ssl_jax.train --config=configs/wavlm_tiny.py --workdir=runs/wavlm_tiny
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "hubert_tiny.py")).get_config(arg)
    load_config_module(os.path.join(_HERE, "wavlm_base.py")).wavlm(c, buckets=64, max_distance=200)
    return c
