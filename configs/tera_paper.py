"""TERA (Liu, Li & Lee, 2021, "TERA: Self-Supervised Learning of Transformer Encoder Representation
for Speech", IEEE/ACM TASLP 29), the base model with time, frequency and magnitude alteration.

  python -m ssl_jax.train --config=configs/tera_paper.py --workdir=runs/tera \\
      --config.data.path=/data/librispeech960_shards

Paper: 80-d log-mel (25 ms window, 10 ms hop, CMVN), no stacking (100 Hz); 3 post-LN Transformer
layers, d=768, 12 heads, FFN 3072; alterations: time (spans of 7 frames, 15% of the frames,
80% zeroed / 10% replaced by random frames / 10% unchanged), frequency (one band of a width
drawn uniformly from 0 to 20% of the 80 bins, i.e. 0-16, zeroed over the whole utterance),
magnitude (Gaussian noise of std 0.2 added with probability 0.1); L1 reconstruction of the
time-altered frames and frequency-masked bins through the prediction head; LibriSpeech 960 h.
Optimisation as the authors' released recipe (configs/mockingjay_paper.py: AdamW, lr 2e-4, 7%
warm-up, clipping at 5, 1M updates of 32 utterances); dropout 0.1.
Deviations: the 80/10/10 choice is drawn per span and the noise per utterance (the released
implementation: once per utterance and once per batch; its base configuration also uses dropout
0.3 and a noise probability of 0.15); the frame encoder's conv positional embedding replaces
the sinusoids; crops of at most 15 s (the released recipe caps sequences at 1500 frames).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def _mockingjay():
    return load_config_module(os.path.join(_HERE, "mockingjay_paper.py"))


def model_config(**overrides) -> config_dict.ConfigDict:
    """Mockingjay's frame encoder without stacking and with 3 layers, `overrides` applied."""
    return _mockingjay().model_config(**{"logmel_stack": 1, "num_layers": 3, **overrides})


def objective_config(**overrides) -> config_dict.ConfigDict:
    """Time, frequency and magnitude alteration (objectives/reconstruction.py)."""
    return _mockingjay().objective_config(**{
        "name": "tera", "mask_length": 7, "freq_mask_fraction": 0.2, "noise_prob": 0.1, "noise_std": 0.2,
        **overrides})


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = _mockingjay().get_config()
    c.model = model_config()
    c.objective = objective_config()
    return c
