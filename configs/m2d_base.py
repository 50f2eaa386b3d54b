"""Masked Modeling Duo (M2D) pretraining (Niizumi et al., ICASSP 2023, "Masked Modeling Duo:
Learning Representations by Encouraging Both Networks to Model the Input"; TASLP 2024
extension), ViT-Base on 16 x 16 log-mel patches.

  python -m ssl_jax.train --config=configs/m2d_base.py --workdir=runs/m2d_base \
      --config.data.path=/data/audioset_shards

Paper (and its released recipe):
  input         80-band log-mel, 25 ms window, 10 ms hop, standardised by the training set's
                mean and std; crops of 80 x 608 frames (6.08 s)
  patches       16 bands x 16 frames (5 x 38 = 190 per crop), linear embedding, fixed 2-D
                sin-cos positions, [CLS] token
  encoder       ViT-Base: 12 pre-LN blocks, d=768, 12 heads, MLP 3072, final LayerNorm
  predictor     8 blocks, d=512, 16 heads, MLP 2048, mask tokens + sin-cos positions
  masking       random unstructured, ratio 0.7 (0.6 also released)
  target        EMA of the online encoder on the masked patches only; decay 0.99995 -> 0.99999
                linearly over the whole run
  loss          targets standardised per patch, then MSE of l2-normalised vectors (2 - 2 cos)
  optimiser     AdamW (0.9, 0.95), weight decay 0.05, base lr 3e-4 x batch / 256 = 2.4e-3,
                20 of 300 epochs warm-up then cosine decay, batch 2048, no gradient clipping
  data          AudioSet (about 2.0M clips): about 980 updates an epoch, 294k updates
Frame-level features: a time step's 5 frequency patches concatenated (5 x 768 = 3840-d at
6.25 Hz); `pooled` (the clip embedding) is their mean over time.

Deviations: the log-mel filterbank spans 0-8000 Hz (the reference's 50-8000 Hz) and is not
centred (608 frames need 97,520 samples: `data.max_seconds` = 6.095); the standardisation
statistics are those of the embedded corpus (measured: mean -10.3, std 4.3 of natural-log
mel energies) - measure them on the training data for another corpus; weight decay spares
every 1-D parameter, the [CLS] and mask tokens too (the reference decays those two); the
target network holds a copy of the patch embedding and [CLS] token that it does not use (it
reads the online ones, as the reference); inputs of any length run in one pass (the
reference cuts evaluation inputs into 608-frame chunks), with sin-cos positions extended
past the training length; the blocks are the package's pre-LN Transformer layers (LayerNorm
epsilon 1e-5 and N(0, 0.02) weights; the reference's 1e-6 and Xavier-uniform); the last of
Upstream's hidden states precedes the final LayerNorm, as every encoder's here (the
reference's layer features end with the normalised output, `last_hidden_state` here).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def model_config() -> config_dict.ConfigDict:
    """The patch ViT (ssl_jax/models/patch_encoder.py) at M2D's ViT-Base size."""
    m = config_dict.ConfigDict()
    m.architecture = "patches"
    m.frontend = "logmel"
    m.logmel_bins = 80
    m.logmel_window = 400  # 25 ms
    m.logmel_hop = 160  # 10 ms
    m.logmel_norm = "none"
    m.logmel_mean = -10.3  # embedded corpus statistics (docstring)
    m.logmel_std = 4.3
    m.patch_freq = 16
    m.patch_time = 16
    m.dim = 768
    m.num_layers = 12
    m.num_heads = 12
    m.intermediate_size = 3072
    m.dtype = "float32"
    m.remat = "none"  # or a policy that trades compute for memory: models/transformer.REMAT_POLICIES
    return m


def objective_config(steps: int) -> config_dict.ConfigDict:
    o = config_dict.ConfigDict()
    o.name = "m2d"
    o.mask_ratio = 0.7
    o.target_norm = "layer"  # standardise every target vector over channels ("none": raw)
    o.predictor = config_dict.ConfigDict(dict(dim=512, num_layers=8, num_heads=16, intermediate_size=2048))
    o.ema = config_dict.ConfigDict(dict(start=0.99995, end=0.99999, steps=steps, shape="linear"))
    # Spread of the unit targets / predictions x sqrt(dim) across masked patches (1 = isotropic).
    o.collapse = config_dict.ConfigDict(dict(target_std=0.05, pred_std=0.05))
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.max_seconds = 6.095  # 608 log-mel frames (docstring)
    c.data.normalize = False  # the log-mel frames are standardised in the model

    c.train.steps = 294_000
    c.train.batch_size = 2048

    c.optim.lr = 2.4e-3
    c.optim.warmup_fraction = 20 / 300
    c.optim.schedule = "cosine"
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.05
    c.optim.clip_norm = 0.0  # none

    c.model = model_config()
    c.objective = objective_config(c.train.steps)
    return c
