"""ATST-Clip BASE pretraining (Li & Li, 2022, "ATST: Audio Representation Learning with
Teacher-Student Transformer", Interspeech, Sec. 2-3).

  python -m ssl_jax.train --config=configs/atst_clip_base.py --workdir=runs/atst_clip_base \
      --config.data.path=/data/audioset_shards

Paper (AudioSet, BASE):
  input        | two random 6-s crops of each 10-s clip; 64 mel bands, 64 ms window, 10 ms hop
  tokens       | 4 frames x 64 bands = 40 ms, linear patch embedding, a CLS token
  encoder      | 12 pre-LN blocks, d=768, 12 heads, FFN 3072; the CLS output is the embedding
  views        | each crop: Mixup (a ~ U(0, 0.4)) and Random Resized Crop (canvas 1.5 x the
               | frames; window 0.6-1.5 x the frames, band 0.6-1 x the bands)
  heads        | projector and predictor: Linear 4096, BatchNorm, ReLU, Linear 256
  loss         | 2 - 2 cos between clip embeddings, symmetric over the two crops
  teacher      | EMA of encoder + projector, decay 0.9995 -> 1 on a cosine over training
  optimiser    | AdamW, peak lr 2e-4, 15,860 warm-up steps then cosine, 318,000 steps,
               | 1,536 clips per batch (6 GPUs x 256); weight decay 0.04 -> 0.4 (cosine)
This recipe: configs/atst_frame_base.py's encoder and front end (its docstring lists their
differences from the paper); the clip embedding is the mean of the last layer over valid
tokens (`SpeechEncoder` has no CLS token); constant weight decay 0.04, cosine decay to 0.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    frame = load_config_module(os.path.join(_HERE, "atst_frame_base.py"))
    c = frame.get_config()
    c.train.steps = 318_000
    c.train.batch_size = 1536
    c.optim.lr = 2e-4
    c.optim.warmup_fraction = 15_860 / 318_000
    c.objective = frame.objective_config("clip")
    return c
