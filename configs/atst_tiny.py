"""ATST-Frame, tiny (`:clip`: ATST-Clip, tiny): configs/atst_frame_base.py (configs/atst_clip_base.py)
on the data, schedule and network size of configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/atst_tiny.py --workdir=runs/atst_tiny
  python -m ssl_jax.train --config=configs/atst_tiny.py:clip --workdir=runs/atst_clip_tiny

The paper's tokens (4 log-mel frames x 64 bands = 40 ms, 25 Hz), views, masking (blocks of 5
tokens, mask_prob 0.65, ATST-Frame), heads (shrunk to 512 hidden, 128 out) and loss. Network and
data as the tiny wav2vec 2.0: 4 pre-LN blocks of d=128, a 25 ms window (speech), a conv
positional embedding over 4 tokens (160 ms, as w2v2_tiny's 8 frames at 50 Hz), 4 s crops in
batches of 8, 800 steps at peak lr 1e-3. ATST-Frame's views are the whole 4-s crop; ATST-Clip
crops 2.4 s twice from it (the paper's 6 of 10 s). The teacher's decay goes from 0.99 to 1 on a
cosine over the 800 steps (the paper's small model starts at 0.99-0.997 for 40-60k steps).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    level = {None: "frame", "": "frame", "frame": "frame", "clip": "clip"}.get(arg)
    if level is None:
        raise ValueError(f"configs/atst_tiny.py takes 'frame' (the default) or 'clip', got {arg!r}")
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    m = c.model
    m.logmel_bins = 64
    m.logmel_stack = 4  # 40 ms tokens, 25 Hz
    m.num_conv_pos_embeddings = 4  # 160 ms

    o = c.objective = load_config_module(os.path.join(_HERE, "atst_frame_base.py")).objective_config(level)
    o.head_hidden = 512
    o.head_dim = 128
    o.crop_seconds = 0.0 if level == "frame" else 2.4
    o.ema.start = 0.99
    o.ema.steps = c.train.steps
    o.collapse.target_std = 0.01  # an even spread gives 1/sqrt(128) = 0.088
    o.collapse.pred_std = 0.005  # predictions start near the targets' mean (0.014 after 40 steps)
    return c
