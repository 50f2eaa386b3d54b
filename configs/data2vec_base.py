"""data2vec (audio) BASE pretraining (Baevski et al., 2022, "data2vec", Sec. 4.2 / Appendix).

  python -m ssl_jax.train --config=configs/data2vec_base.py --workdir=runs/data2vec_base \
      --config.data.path=/data/librispeech_shards

Paper: the wav2vec 2.0 BASE encoder (conv extractor 7x512, 12 post-LN blocks of d=768, FFN
3072) with the positional embedding of 5 conv layers of width 19 in 16 groups; masks of
p=0.65 x l=10 (about half the frames); teacher = EMA of the student with tau 0.999 -> 0.9999
linearly over 30k updates, then constant; targets = average of the top K=8 blocks'
feed-forward outputs (before the last residual connection), each instance-normalised per
utterance; smooth L1 regression with beta 0.25, scaled by 1/sqrt(768), at masked frames,
through a linear projection of the student's output; Adam (0.9, 0.98, eps 1e-6), weight decay
0.01, peak lr 5e-4, 3% warm-up then cosine decay, 400k updates; dropout 0.1, LayerDrop 0.05;
batches of 63 minutes (3.8M samples per GPU on 16 GPUs).
Batch: utterances x crop as configs/w2v2_base.py; 240 x 250,240 samples = 60M (62.6 min).
Deviation: linear instead of cosine lr decay (the optimiser's schedules are linear or constant).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def objective_config() -> config_dict.ConfigDict:
    o = config_dict.ConfigDict()
    o.name = "data2vec"
    o.mask_prob = 0.65
    o.mask_length = 10
    o.min_masks = 2
    o.loss_beta = 0.25  # smooth L1; 0 = squared error
    o.loss_scale = 0.0  # 0: 1/sqrt(hidden_size)
    o.targets = config_dict.ConfigDict(dict(
        top_k=8,  # blocks averaged
        source="ffn",  # "ffn": feed-forward output before the last residual; "block": block output
        layer_norm="instance",  # of each block: "instance" (per utterance over time), "layer" or "none"
        final_norm="none",  # of the average
    ))
    o.ema = config_dict.ConfigDict(dict(start=0.999, end=0.9999, steps=30_000, shape="linear"))
    o.collapse = config_dict.ConfigDict(dict(target_std=0.1, pred_std=0.01))  # fairseq's min_target_var / min_pred_var
    return o


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.model.num_pos_conv_layers = 5
    c.model.num_conv_pos_embeddings = 19
    c.train.batch_size = 240
    c.optim.warmup_fraction = 0.03
    c.objective = objective_config()
    return c
