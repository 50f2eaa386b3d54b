"""Discrete BERT (Baevski et al., 2019, "Effectiveness of self-supervised pre-training for speech
recognition"): masked language modelling over discrete units, at the BASE size.

  python -m ssl_jax.train --config=configs/discrete_bert_base.py --workdir=runs/discrete_bert_base \
      --config.data.path=/data/librispeech_shards

Paper: BERT BASE (12 blocks, d=768, FFN 3072, 12 heads) over vq-wav2vec units (a 13.5k-unit
vocabulary of codeword pairs), spans of 10 tokens masked from starts drawn with p=0.05,
cross-entropy on masked tokens, Adam with peak lr 2e-4 and linear decay.
This recipe: the units are 500 k-means clusters of 39-d MFCC frames (`objective.targets`,
fitted when the run starts and cached, as HuBERT's first iteration; the encoder's `units`
front end assigns and embeds them, so the model runs from audio), the BASE Transformer of
configs/w2v2_base.py (post-LN, conv positional embedding), masks of 10 frames from starts
with p=0.05 (mask_prob 0.5 in the fairseq convention), peak lr 2e-4 and the BASE batch.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def discrete_bert(c: config_dict.ConfigDict, units: int) -> None:
    """Turns a recipe into Discrete BERT over `units` MFCC k-means units, in place."""
    hubert = load_config_module(os.path.join(_HERE, "hubert_base.py"))
    c.model.frontend = "units"
    c.model.units = units
    c.model.feat_quantizer_dropout = 0.0
    targets = hubert.targets_config(1)
    targets.num_clusters = (units,)
    c.objective = config_dict.ConfigDict()
    c.objective.name = "discrete_bert"
    c.objective.mask_prob = 0.5
    c.objective.mask_length = 10
    c.objective.min_masks = 2
    c.objective.targets = targets


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    discrete_bert(c, 500)
    c.model.unit_dim = 768
    c.optim.lr = 2e-4
    return c
