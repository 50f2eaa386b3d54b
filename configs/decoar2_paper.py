"""DeCoAR 2.0 (Ling & Liu, 2020, "DeCoAR 2.0: Deep Contextualized Acoustic Representations with
Vector Quantization", arXiv:2012.06659).

  python -m ssl_jax.train --config=configs/decoar2_paper.py --workdir=runs/decoar2 \\
      --config.data.path=/data/librispeech960_shards

Paper (and the released encoder, awslabs/speech-representations): 80-d log-mel (CMVN), no
stacking (100 Hz), a linear projection to 768, wav2vec 2.0's Transformer: 12 post-LN layers,
12 heads, FFN 3072, conv positional embedding of 128 frames in 16 groups, dropout 0.1; input
frames masked as wav2vec 2.0 (span starts with p = 0.065, spans of M = 10 frames); a Gumbel
vector quantiser of G = 2 codebooks x V = 320 entries between the encoder and the
reconstruction module; loss: L1 reconstruction of the masked frames + alpha = 0.1 x wav2vec
2.0's diversity loss; LibriSpeech 960 h.
Deviations: the released encoder also has input dropout 0.1 and LayerDrop 0.05, which the frame
encoder lacks; the spans are 10 frames of 10 ms (wav2vec 2.0's are of 20 ms); the masked frames
take a learned mask vector before the input projection; the quantiser reads the encoder's
output times hidden_size^-0.25 (objectives/decoar2.py: unscaled, its logits saturate and the
codes collapse); the Gumbel temperature schedule, the codevector size (768) and the
optimisation (wav2vec 2.0 BASE's: Adam, peak lr 5e-4, 8% warm-up, linear decay, 400k updates,
configs/w2v2_base.py) are wav2vec 2.0's, which the paper builds on.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def model_config(**overrides) -> config_dict.ConfigDict:
    """The frame encoder: 100 Hz log-mel and wav2vec 2.0 BASE's Transformer, `overrides` applied."""
    mockingjay = load_config_module(os.path.join(_HERE, "mockingjay_paper.py"))
    return mockingjay.model_config(**{"logmel_stack": 1, **overrides})


def objective_config(**overrides) -> config_dict.ConfigDict:
    o = config_dict.ConfigDict(dict(
        name="decoar2",
        mask_prob=0.65,  # fairseq's convention: p = 0.065 x M = 10 (masking.span_mask)
        mask_length=10,
        min_masks=2,
        vq_groups=2,
        vq_codes=320,
        vq_input_power=-0.25,  # the quantiser reads h * hidden_size^-0.25 (docstring)
        diversity_weight=0.1,  # alpha
        gumbel_temperature=(2.0, 0.5, 0.999995),  # start, floor, decay per update
        collapse=config_dict.ConfigDict(dict(pred_std=0.1)),
    ))
    o.update(overrides)
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.normalize = False  # the log-mel CMVN standardises
    c.model = model_config()
    c.objective = objective_config()
    return c
