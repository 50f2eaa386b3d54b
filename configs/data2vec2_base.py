"""data2vec 2.0 (audio) BASE pretraining (Baevski et al., 2023, "Efficient Self-supervised
Learning with Contextualized Target Representations", Sec. 3-4, audio setup).

  python -m ssl_jax.train --config=configs/data2vec2_base.py --workdir=runs/data2vec2_base \
      --config.data.path=/data/librispeech_shards

Paper: the data2vec BASE encoder (configs/data2vec_base.py: conv extractor 7x512, 12 blocks of
d=768, 5-layer positional conv); M=8 masked copies of each sample share one teacher pass;
inverse block masking of 50% of the frames with visible blocks of 5 frames; the student
encodes the visible frames only; a decoder of 4 grouped conv blocks (width 384, kernel 7,
16 groups) fills in the masked frames (noise std 0.01 there); targets = average of the top 8
instance-normalised blocks of the teacher; squared-error loss (beta 0) scaled by
1/sqrt(768); teacher tau 0.999 -> 0.99999 over 75k updates; 400k updates at peak lr 7.5e-4.
Deviation: the positional conv reads the visible frames only (masked ones are zero there), so
nothing of a masked frame reaches the student.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def objective_config() -> config_dict.ConfigDict:
    o = load_config_module(os.path.join(_HERE, "data2vec_base.py")).objective_config()
    o.name = "data2vec2"
    o.num_masks = 8  # masked copies per teacher pass
    o.mask_prob = 0.5  # fraction of frames masked
    o.mask_length = 5  # width of the visible blocks (inverse block masking)
    o.mask_noise_std = 0.01
    o.loss_beta = 0.0
    o.decoder = config_dict.ConfigDict(dict(dim=384, kernel=7, groups=16, layers=4))
    o.ema.update(start=0.999, end=0.99999, steps=75_000)
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "data2vec_base.py")).get_config()
    c.optim.lr = 7.5e-4
    c.objective = objective_config()
    return c
