"""Audio-MAE, tiny: configs/mae_paper.py on the data and schedule of configs/w2v2_tiny.py,
sized to learn speech on 2 CPU cores in minutes (as configs/m2d_tiny.py).

  python -m ssl_jax.train --config=configs/mae_tiny.py --workdir=runs/mae_tiny

Same objective as the paper recipe (unstructured masking of the valid patches, the encoder
on the visible ones, a light decoder with mask tokens, MSE on the masked patches against
per-patch standardised targets). Deviations, for size and for speech:
  input      80 log-mel bands (m2d_tiny's), standardised as the paper recipe
  patches    80 bands x 4 frames (40 ms, full band) instead of 16 x 16 (160 ms): frames come
             at 25 Hz, the rate phone recognition needs, 99 patches in a 4 s crop (m2d_tiny's
             patches; `--config.model.patch_freq=16` gives 5 bands per time step, slower)
  masking    ratio 0.7 (the paper's 0.8 is for 16 x 16 patches of 10 s clips; a 40 ms
             full-band patch has fewer, closer neighbours to fill it in from)
  encoder    4 pre-LN blocks, d=128, 4 heads, MLP 512 (the paper's ratio 4)
  decoder    2 blocks, d=96, 4 heads, MLP 384
  optimiser  the paper recipe's AdamW (0.9, 0.95), weight decay 1e-4 and cosine schedule at
             peak lr 1e-3 with 8% warm-up and gradient clipping at 10 (w2v2_tiny's); 4 s crops,
             batches of 8, 800 updates.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    base = load_config_module(os.path.join(_HERE, "mae_paper.py"))
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    optim = base.get_config().optim
    optim.lr = 1e-3
    optim.warmup_fraction = 0.08
    optim.clip_norm = 10.0
    c.optim = optim
    c.data.normalize = False

    m = c.model = base.model_config()
    m.logmel_bins = 80
    m.patch_freq = 80  # full band (docstring)
    m.patch_time = 4  # 40 ms: 25 Hz frames
    m.dim = 128
    m.num_layers = 4
    m.num_heads = 4
    m.intermediate_size = 512

    o = c.objective = base.objective_config()
    o.mask_ratio = 0.7
    o.decoder.update(dim=96, num_layers=2, num_heads=4, intermediate_size=384)
    return c
