"""HuBERT LARGE pretraining on Libri-Light 60k h (Hsu et al., 2021, Sec. IV-B).

  python -m ssl_jax.train --config=configs/hubert_large.py --workdir=runs/hubert_large \
      --config.data.path=/data/librilight_shards \
      --config.objective.targets.checkpoint=runs/hubert_base_it2

Paper: the wav2vec 2.0 LARGE network (24 pre-LN blocks of d=1024, FFN 4096, 16 heads,
LayerNorm conv extractor) with a final projection to 768; targets: 500 clusters on the 9th
layer of the second-iteration BASE model (the third iteration); masks p=0.08 x l=10; no
dropout or LayerDrop, full gradient into the extractor, per-utterance waveform normalisation;
Adam (0.9, 0.98, eps 1e-6), weight decay 0.01, peak lr 1.5e-3, 32k warm-up then linear
decay over 400k updates, clip norm 1.
Batch: 900k samples on each of 128 GPUs = 115.2M samples (2 h); 448 utterances of up to
250,240 samples = 112.1M (2.7% under; divides over up to 64 devices, 512 on 128).
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    base = load_config_module(os.path.join(_HERE, "hubert_base.py"))
    w2v2 = load_config_module(os.path.join(_HERE, "w2v2_base.py"))
    c = base.get_config("iter2")
    c.model = w2v2.model_config("large")
    m = c.model
    m.hidden_dropout = 0.0
    m.attention_dropout = 0.0
    m.activation_dropout = 0.0
    m.feat_proj_dropout = 0.0
    m.feat_quantizer_dropout = 0.0
    m.layerdrop = 0.0
    m.feature_grad_scale = 1.0
    c.data.normalize = True
    c.train.steps = 400_000
    c.train.batch_size = 448
    c.optim.lr = 1.5e-3
    c.optim.warmup_fraction = 32_000 / c.train.steps
    c.optim.clip_norm = 1.0
    c.objective.final_dim = 768
    c.objective.targets.layer = 9
    c.objective.targets.num_clusters = (500,)
    return c
