"""Audio-MAE pretraining (Huang et al., NeurIPS 2022, "Masked Autoencoders that Listen"; after
MAE, He et al., CVPR 2022), ViT-Base on 16 x 16 patches of 128-band log-mel.

  python -m ssl_jax.train --config=configs/mae_paper.py --workdir=runs/mae_paper \
      --config.data.path=/data/audioset_shards

Paper (and its released pretraining recipe):
  input         128-band log-mel, 25 ms window, 10 ms hop, 1024 frames (10.24 s) per clip,
                standardised by the training set's mean and twice its std
  patches       16 bands x 16 frames (8 x 64 = 512 per clip), linear embedding, fixed 2-D
                sin-cos positions, [CLS] token
  encoder       ViT-Base: 12 pre-LN blocks, d=768, 12 heads, MLP 3072, final LayerNorm; it
                reads the visible patches only
  decoder       16 blocks, d=512, 16 heads, MLP 2048, a learned mask token at every masked
                position, fixed sin-cos positions, a linear layer to the 256 patch values
  masking       random unstructured, ratio 0.8
  loss          MSE on the masked patches only, each target patch standardised by its own
                mean and variance (norm_pix_loss)
  optimiser     AdamW (0.9, 0.95), weight decay 1e-4, base lr 2e-4 x batch / 256 = 4e-4,
                3 of 32 epochs warm-up then half-cycle cosine decay, batch 512, no clipping
  data          AudioSet-2M (about 2.0M clips): about 3,900 updates an epoch, 125k updates
Frame-level features: a time step's 8 frequency patches concatenated (8 x 768 = 6144-d at
6.25 Hz); `pooled` (the clip embedding) is their mean over time.

Deviations: the decoder attends globally over all patches and the [CLS] token (the paper's
best decoder uses shifted 4 x 4 local windows, Swin-style, without the [CLS] token; global
attention is the paper's ablated alternative and MAE's decoder); the log-mel filterbank is
librosa's Slaney mel over 0-8000 Hz with natural-log energies, not Kaldi's fbank, and is not
centred (1024 frames need 164,080 samples: `data.max_seconds` = 10.255); the standardisation
statistics are those of the embedded corpus (measured on 200 training utterances at 128
bands: mean -10.3, std 4.3 of natural-log mel energies; divided by twice the std, as the
reference does with AudioSet's) - measure them on the training data for another corpus; the
released recipe's random circular time shift and gain (`roll_mag_aug`) is not applied;
shorter clips are padded and their padded patches are neither masked, encoded nor counted
in the loss (the reference zero-pads the log-mel to 1024 frames and reconstructs the pad
too); a patch's variance for the normalised target is the biased one (the reference's is
unbiased, a factor sqrt(256/255) apart); weight decay spares every 1-D parameter, the [CLS]
and mask tokens too (the reference decays those two); the blocks are the package's pre-LN
Transformer layers (LayerNorm epsilon 1e-5 and N(0, 0.02) weights; the reference's 1e-6 and
Xavier-uniform); inputs of any length run in one pass, with sin-cos positions extended past
the training length; the last of Upstream's hidden states precedes the final LayerNorm, as
every encoder's here (`last_hidden_state` is the normalised output).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def model_config() -> config_dict.ConfigDict:
    """The patch ViT (ssl_jax/models/patch_encoder.py) at Audio-MAE's ViT-Base size."""
    m = config_dict.ConfigDict()
    m.architecture = "patches"
    m.frontend = "logmel"
    m.logmel_bins = 128
    m.logmel_window = 400  # 25 ms
    m.logmel_hop = 160  # 10 ms
    m.logmel_norm = "none"
    m.logmel_mean = -10.3  # embedded corpus statistics (docstring)
    m.logmel_std = 2 * 4.3  # twice the std, as the reference
    m.patch_freq = 16
    m.patch_time = 16
    m.dim = 768
    m.num_layers = 12
    m.num_heads = 12
    m.intermediate_size = 3072
    m.dtype = "float32"
    m.remat = "none"  # or a policy that trades compute for memory: models/transformer.REMAT_POLICIES
    return m


def objective_config() -> config_dict.ConfigDict:
    o = config_dict.ConfigDict()
    o.name = "mae"
    o.mask_ratio = 0.8
    o.norm_pix_loss = True  # standardise every target patch over its own values
    o.decoder = config_dict.ConfigDict(dict(dim=512, num_layers=16, num_heads=16, intermediate_size=2048))
    # Spread of the reconstructions across masked patches: a decoder that outputs one patch
    # everywhere sits at 0.001. Healthy runs pass through a phase of near-mean outputs before
    # they use the context (mae_tiny: down to 0.026 around update 110, 0.12 by update 240).
    o.collapse = config_dict.ConfigDict(dict(pred_std=0.01))
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.max_seconds = 10.255  # 1024 log-mel frames (docstring)
    c.data.normalize = False  # the log-mel frames are standardised in the model

    c.train.steps = 125_000
    c.train.batch_size = 512

    c.optim.lr = 4e-4
    c.optim.warmup_fraction = 3 / 32
    c.optim.schedule = "cosine"
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.weight_decay = 1e-4
    c.optim.clip_norm = 0.0  # none

    c.model = model_config()
    c.objective = objective_config()
    return c
