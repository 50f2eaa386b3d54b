"""vq-wav2vec (Gumbel), tiny: configs/wav2vec_tiny.py with the quantiser of
configs/vq_wav2vec_paper.py.

  python -m ssl_jax.train --config=configs/vq_wav2vec_tiny.py --workdir=runs/vq_wav2vec_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 updates at peak lr 1e-3. As
configs/wav2vec_tiny.py (log-mel front end, 5 causal conv layers of 256, 10 distractors) with
a Gumbel-softmax quantiser on the projected frames, the temperature falling linearly from 2
to 0.5 over the first 70% of updates, as the paper. Deviations: 2 x 64 codes instead of
2 x 320 (a 1 h corpus and 800 updates would leave most of 320 unused) and K = 12 steps, as
wav2vec (the paper's vq-wav2vec predicts 8).
"""

import os

from ml_collections import config_dict

from ssl_jax.models.frame_encoder import Config
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "wav2vec_tiny.py")).get_config()
    c.model = config_dict.ConfigDict(Config(**{**c.model.to_dict(), "vq_layer": 0, "vq_groups": 2,
                                               "vq_codes": 64}).to_dict())
    c.objective = config_dict.ConfigDict(dict(
        name="vq_wav2vec",
        prediction_steps=12,
        num_negatives=10,
        gumbel_temperature=(2.0, 0.5, 0.7),
    ))
    return c
