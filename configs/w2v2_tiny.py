"""wav2vec 2.0, tiny: the BASE recipe shrunk to learn visibly on 2 CPU cores in minutes.

  python -m ssl_jax.train --config=configs/w2v2_tiny.py --workdir=runs/w2v2_tiny

Same objective and schedule shape as configs/w2v2_base.py (Baevski et al., 2020). Deviations,
all for size: a narrow conv extractor (7 layers, same kernels/strides, 320x down-sampling),
a 4-layer d=128 post-LN Transformer, 2 x 64 codebook entries, K=20 distractors, 4 s crops,
batches of 8 utterances, a higher peak lr with a short warm-up, no dropout or layer drop,
and a faster Gumbel temperature decay (the floor is reached within the run).
"""

import importlib.util
import os

from ml_collections import config_dict


def _base():
    """configs/w2v2_base.py, loaded by path so the config works from any working directory."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "w2v2_base.py")
    spec = importlib.util.spec_from_file_location("ssl_jax_configs_w2v2_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = _base().get_config()
    c.data.synth_hours = 1.0
    c.data.max_seconds = 4.0
    c.data.min_seconds = 1.0
    c.data.num_workers = 0
    c.data.num_buckets = 4

    c.train.steps = 1200
    c.train.batch_size = 8
    c.train.log_every = 25
    c.train.eval_every = 300
    c.train.eval_batches = 4
    c.train.checkpoint_every = 300
    c.train.keep_checkpoints = 2

    c.optim.lr = 2e-3
    c.optim.warmup_fraction = 0.08

    m = c.model
    m.conv_dim = (64,) * 7
    m.hidden_size = 128
    m.num_layers = 4
    m.num_heads = 4
    m.intermediate_size = 256
    m.num_conv_pos_embeddings = 32
    m.num_conv_pos_embedding_groups = 8
    m.hidden_dropout = 0.0
    m.attention_dropout = 0.0
    m.feat_proj_dropout = 0.0
    m.layerdrop = 0.0
    m.num_codevector_groups = 2
    m.num_codevectors_per_group = 64
    m.codevector_dim = 64
    m.proj_codevector_dim = 64

    c.objective.num_negatives = 20
    c.objective.gumbel_temperature = (2.0, 0.5, 0.998)
    return c
