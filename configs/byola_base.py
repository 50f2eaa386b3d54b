"""BYOL-A pretraining (Niizumi et al., 2023, "BYOL for Audio: Exploring Pre-trained
General-purpose Audio Representations", TASLP; version 1: Niizumi et al., 2021, "BYOL for
Audio: Self-Supervised Learning for General-Purpose Audio Representation", IJCNN).

  python -m ssl_jax.train --config=configs/byola_base.py --workdir=runs/byola_base \
      --config.data.path=/data/audioset_shards
  python -m ssl_jax.train --config=configs/byola_base.py:v1 --workdir=runs/byola_v1 ...

Paper (v2, the default; v1 where it differs):
* input: 64 log-mel bins, 1024-sample window, 10 ms hop, 0.95 s segments (96 frames).
* encoder: AudioNTT2022, 2 blocks of [3x3 conv, 64 channels, BatchNorm, ReLU, 2x2 max pool] and
  a frame-wise MLP 1024 -> 2048 -> 2048 concatenated with the conv features, d = 3072 at 25 Hz
  (v1: AudioNTT2020, 3 blocks, MLP 512 -> 512 -> 512, d = 512 at 12.5 Hz, no concatenation).
* clip embedding: temporal mean + temporal max.
* heads: projector d -> 4096 -> 256 and predictor 256 -> 4096 -> 256 (Linear, BatchNorm, ReLU,
  Linear); target network: EMA 0.99 of encoder + projector; loss 2 - 2 cos, symmetrised.
* augmentation: log-mixup-exp, ratio 0.2, memory bank of 512 (v1: 0.4, 2048); random resize
  crop, virtual canvas 1.0 x 1.5 (freq x time), scales 0.6-1.5; random linear fader, gain 1.0
  (v1: none).
* optimisation: Adam, lr 1e-4 (v1: 3e-4), constant, batches of 256, 100 epochs of AudioSet
  (about 2M clips: about 770k updates).

Deviations (ssl_jax/models/audio_cnn.py, ssl_jax/objectives/byola.py): the log-mel input is
standardised per utterance (the papers use the pre-training set's mean and std); the conv blocks
normalise each frame over bins and channels instead of BatchNorm2d (no running statistics);
the projector and predictor always use batch statistics; random resize crop interpolates
bilinearly (reference: bicubic); mel bands span 0-8 kHz (reference: 60-7800 Hz) from frames that
are not centred; the memory bank is filled after each update. `train.steps` assumes AudioSet:
set it to 100 epochs of your corpus.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def model_config(version: int = 2) -> config_dict.ConfigDict:
    """The audio_cnn encoder (models/audio_cnn.py) of BYOL-A `version` 1 or 2."""
    m = config_dict.ConfigDict()
    m.architecture = "audio_cnn"
    m.frontend = "logmel"
    m.version = version
    m.logmel_bins = 64
    m.logmel_window = 1024  # 64 ms, the reference's n_fft
    m.logmel_hop = 160  # 10 ms
    m.input_norm = "utterance"  # one mean/std per utterance (papers: of the whole pre-training set)
    m.conv_channels = 64
    m.time_pool = (2, 2) if version == 2 else (2, 2, 2)
    m.mlp_hidden = 2048 if version == 2 else 512
    m.hidden_size = 3072 if version == 2 else 512
    m.dropout = 0.3
    m.dtype = "float32"
    return m


def objective_config(version: int = 2) -> config_dict.ConfigDict:
    o = config_dict.ConfigDict()
    o.name = "byola"
    o.crop_frames = 96  # 0.95 s segments
    o.projector_hidden = 4096
    o.projection_dim = 256
    o.ema = config_dict.ConfigDict(dict(start=0.99, end=0.99, steps=0, shape="linear"))
    # Spread of the l2-normalised targets / predictions x sqrt(dim): ~1 spread out, 0 collapsed.
    o.collapse = config_dict.ConfigDict(dict(target_std=0.05, pred_std=0.05))
    o.augment = config_dict.ConfigDict(dict(
        mixup_ratio=0.2 if version == 2 else 0.4,
        bank_size=512 if version == 2 else 2048,
        virtual_scale=(1.0, 1.5),  # (frequency, time)
        freq_scale=(0.6, 1.5),
        time_scale=(0.6, 1.5),
        fader_gain=1.0 if version == 2 else 0.0,
    ))
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    version = {None: 2, "": 2, "v2": 2, "v1": 1}.get(arg)
    if version is None:
        raise ValueError(f"configs/byola_base.py takes 'v1' or 'v2', got {arg!r}")
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.max_seconds = 10.0  # AudioSet clips; the objective takes one segment of each
    c.data.min_seconds = 1.0
    c.data.normalize = False  # the encoder standardises its log-mel input

    c.train.steps = 770_000
    c.train.batch_size = 256

    c.optim.lr = 1e-4 if version == 2 else 3e-4
    c.optim.schedule = "constant"
    c.optim.warmup_fraction = 0.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 0.0

    c.model = model_config(version)
    c.objective = objective_config(version)
    return c
