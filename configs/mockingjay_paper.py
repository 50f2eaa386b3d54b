"""Mockingjay (Liu, Yang, Chi, Hsu & Lee, 2020, "Mockingjay: Unsupervised Speech Representation
Learning with Deep Bidirectional Transformer Encoders", ICASSP), the LARGE model.

  python -m ssl_jax.train --config=configs/mockingjay_paper.py --workdir=runs/mockingjay \\
      --config.data.path=/data/librispeech360_shards

Paper: 80-d log-mel (25 ms window, 10 ms hop, CMVN), 3 consecutive frames stacked (30 ms, 240
dims); 12 post-LN Transformer layers, d=768, 12 heads, FFN 3072, GELU, dropout 0.1; masked
acoustic model: 15% of the frames chosen in consecutive spans, 80% of them zeroed, 10% replaced
by random frames, 10% unchanged; a prediction head (Dense, GELU, LayerNorm, Dense) reconstructs
the chosen stacked frames under an L1 loss; LibriSpeech train-clean-360. Optimisation follows
the authors' released recipe (s3prl `pretrain/mockingjay/config_runner.yaml`): AdamW, peak lr
2e-4, 7% linear warm-up then linear decay, gradient clipping at 5, 1M updates of 32 utterances
(8 x 4 accumulated).
Deviations: spans of 7 frames of 10 ms become spans of 2 stacked frames (60 ms; 3 would be
90 ms); the 80/10/10 choice is drawn per span; the frame encoder's conv positional embedding
(128 frames in 16 groups, wav2vec 2.0's) replaces the sinusoids; crops of at most 15 s (the
released recipe caps sequences at 500 stacked frames, 15 s).
"""

import os

from ml_collections import config_dict

from ssl_jax.models import frame_encoder
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def model_config(**overrides) -> config_dict.ConfigDict:
    """The frame encoder with Mockingjay's stacked log-mel front end and Transformer, `overrides` applied."""
    fields = dict(frontend="logmel", logmel_bins=80, logmel_window=400, logmel_hop=160, logmel_stack=3,
                  logmel_norm="utterance", body="transformer", hidden_size=768, num_layers=12, num_heads=12,
                  intermediate_size=3072, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                  layer_norm_first=False, dropout=0.1, vq_layer=-1)
    return config_dict.ConfigDict(frame_encoder.Config(**{**fields, **overrides}).to_dict())


def objective_config(**overrides) -> config_dict.ConfigDict:
    """The masked acoustic model: time alteration only (objectives/reconstruction.py)."""
    o = config_dict.ConfigDict(dict(
        name="mockingjay",
        mask_prob=0.15,  # expected share of valid frames in chosen spans (overlaps make it a little less)
        mask_length=2,  # stacked frames (docstring)
        min_masks=0,
        zero_prob=0.8,
        random_prob=0.1,
        freq_mask_fraction=0.0,  # TERA's frequency and magnitude alterations: off
        noise_prob=0.0,
        noise_std=0.0,
        # Spread of the predictions at the chosen frames (CMVN targets: about 1); 0 = every frame the mean.
        collapse=config_dict.ConfigDict(dict(pred_std=0.1)),
    ))
    o.update(overrides)
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.max_seconds = 15.0
    c.data.min_seconds = 1.0
    c.data.normalize = False  # the log-mel CMVN standardises
    c.train.steps = 1_000_000
    c.train.batch_size = 32
    c.optim.lr = 2e-4
    c.optim.warmup_fraction = 0.07
    c.optim.schedule = "linear"
    c.optim.b2 = 0.999
    c.optim.clip_norm = 5.0
    c.model = model_config()
    c.objective = objective_config()
    return c
