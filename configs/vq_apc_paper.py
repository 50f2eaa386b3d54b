"""VQ-APC (Chung et al., 2020, "Vector-Quantized Autoregressive Predictive Coding", Sec. 2-3).

  python -m ssl_jax.train --config=configs/vq_apc_paper.py --workdir=runs/vq_apc \\
      --config.data.path=/data/librispeech360_shards

APC (configs/apc_paper.py) with a vector-quantisation layer in the context stack: 3 residual
GRU layers of 512 with dropout 0.1, one Gumbel-softmax codebook of 512 entries on the last
layer at temperature 0.5 (the authors' released setting), n = 5, Adam lr 1e-4, batches of 32,
100 epochs of train-clean-360. Deviations: as configs/apc_paper.py (crops, schedule).
"""

import os

from ssl_jax.models.frame_encoder import model_config
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None):
    c = load_config_module(os.path.join(_HERE, "apc_paper.py")).get_config()
    c.optim.lr = 1e-4
    c.model = model_config(**{**c.model.to_dict(), "dropout": 0.1, "vq_layer": 3, "vq_groups": 1, "vq_codes": 512})
    c.objective.shift = 5
    c.objective.gumbel_temperature = (0.5, 0.5, 1.0)
    return c
