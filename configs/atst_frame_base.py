"""ATST-Frame BASE pretraining (Li, Shao & Li, 2024, "Self-supervised Audio Teacher-Student
Transformer for Both Clip-level and Frame-level Tasks", IEEE/ACM TASLP, Sec. III-IV).

  python -m ssl_jax.train --config=configs/atst_frame_base.py --workdir=runs/atst_frame_base \
      --config.data.path=/data/audioset_shards

Paper (AudioSet, BASE):
  input        | 10-s crops; 64 mel bands, 64 ms window (1024-point FFT), 10 ms hop
  tokens       | 4 frames x 64 bands = 40 ms (25 Hz), linear patch embedding
  encoder      | 12 pre-LN blocks, d=768, 12 heads, FFN 3072; final LayerNorm
  views        | one crop, two views: the first as it is, the second with Mixup (a ~ U(0, 0.4))
               | and Random Resized Crop in frequency only (band of 0.6-1 x 64 bands)
  masking      | student only, both views, the same block mask: blocks of 5 tokens, ratio 0.65
  heads        | projector and predictor: Linear 4096, BatchNorm, ReLU, Linear 256
  loss         | 2 - 2 cos at the masked tokens, symmetric over the two views
  teacher      | EMA of encoder + projector, decay 0.9996 -> 1 on a cosine over training
  optimiser    | AdamW, peak lr 8e-5, 19,900 warm-up steps then cosine, 398,000 steps,
               | 864 crops per batch (6 GPUs x 144); weight decay 0.04 -> 0.4 (cosine)
This recipe: the project's log-mel front end (natural-log energies over 0-8 kHz, the paper
uses dB min-max scaled over 60-7800 Hz) and `SpeechEncoder`'s conv positional embedding over
64 tokens (2.56 s) instead of learned absolute positions; no stochastic depth; mask spans by
`masking.span_mask` with the paper's mask_prob 0.65 and length 5 (the fairseq convention);
Mixup mixes the next utterance of the batch (the paper: a memory bank of past inputs); a
constant weight decay of 0.04 (the trainer has no decay schedule) and cosine decay to 0.
Deviations of the objective: ssl_jax/objectives/atst.py.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def model_config() -> config_dict.ConfigDict:
    """ATST's BASE encoder on the log-mel front end (shared by ATST-Clip and ATST-Frame)."""
    m = load_config_module(os.path.join(_HERE, "w2v2_base.py")).model_config("base")
    m.frontend = "logmel"
    m.logmel_bins = 64
    m.logmel_window = 1024  # 64 ms, the paper's window and FFT
    m.logmel_hop = 160
    m.logmel_stack = 4  # tokens of 4 frames x all bands: 40 ms
    m.layer_norm_first = True
    m.num_conv_pos_embeddings = 64  # 2.56 s at 25 Hz
    m.hidden_dropout = 0.0
    m.attention_dropout = 0.0
    m.activation_dropout = 0.0
    m.feat_proj_dropout = 0.0
    m.feat_quantizer_dropout = 0.0
    m.layerdrop = 0.0
    m.feature_grad_scale = 1.0
    return m


def objective_config(level: str = "frame") -> config_dict.ConfigDict:
    """The objective of ATST-Frame (`level="frame"`) or ATST-Clip (`level="clip"`) at BASE size."""
    o = config_dict.ConfigDict()
    o.name = "atst"
    o.level = level
    o.symmetric = True  # both views through both networks
    o.head_hidden = 4096
    o.head_dim = 256
    o.mask_prob = 0.65  # frame level only
    o.mask_length = 5
    o.min_masks = 1
    o.augment = config_dict.ConfigDict()
    o.augment.mixup = 0.4
    o.augment.freq_scale = (0.6, 1.5)
    if level == "frame":
        o.crop_seconds = 10.0
        o.augment.time_scale = (1.0, 1.0)  # frequency only: the views stay aligned in time
        o.augment.time_canvas = 1.0
        o.augment.first_view = False
        o.ema = config_dict.ConfigDict(dict(start=0.9996, end=1.0, steps=398_000, shape="cosine"))
    else:
        o.crop_seconds = 6.0
        o.augment.time_scale = (0.6, 1.5)
        o.augment.time_canvas = 1.5
        o.augment.first_view = True
        o.ema = config_dict.ConfigDict(dict(start=0.9995, end=1.0, steps=318_000, shape="cosine"))
    # Collapse floors on the l2-normalised outputs' spread: about 1/sqrt(head_dim) = 0.0625
    # when they spread evenly, 0 when they collapse.
    o.collapse = config_dict.ConfigDict(dict(target_std=0.005, pred_std=0.005))
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.max_seconds = 10.0  # AudioSet clips
    c.model = model_config()

    c.train.steps = 398_000
    c.train.batch_size = 864

    c.optim.lr = 8e-5
    c.optim.warmup_fraction = 19_900 / 398_000
    c.optim.schedule = "cosine"
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.04
    c.optim.clip_norm = 0.0  # none in the paper

    c.objective = objective_config("frame")
    return c
