"""wav2vec 2.0, tiny: the BASE recipe shrunk to learn visibly on 2 CPU cores in minutes.

  python -m ssl_jax.train --config=configs/w2v2_tiny.py --workdir=runs/w2v2_tiny

Same objective and schedule shape as configs/w2v2_base.py (Baevski et al., 2020). Deviations,
all for size and speed on a CPU: the log-mel front end (`model.frontend = "logmel"`: 80 bands,
25 ms window, 10 ms hop, two frames stacked = 50 Hz; benchmarks/w2v2_sweep.py: after the same
800 steps its across-speaker word ABX is 8.1% against 20.6% with the waveform extractor, whose
narrow variant, 7 layers of 32-64 channels, stays configured for `--config.model.frontend=conv`),
a 4-layer d=128 pre-LN Transformer with a conv positional embedding over 8 frames (160 ms; the
paper's 128 frames, or 32, smear a short word's frames: after 800 steps the word ABX of every
layer is 6.2-6.3% with 8 frames and 8.9-9.6% with 32; pre-LN trains stably at this learning
rate), 2 x 64 codebook entries, K=20 distractors, spans of 5 frames
with mask_prob 0.5 (about 40% of frames masked; shorter spans give a tiny model a task it
can learn within the run), 4 s crops, batches of 8 utterances, peak lr 1e-3, full gradient
into the conv extractor, no dropout or layer drop, and a Gumbel temperature decay that
reaches its floor within the run.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module


def _base():
    """configs/w2v2_base.py, loaded by path so the config works from any working directory."""
    return load_config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "w2v2_base.py"))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = _base().get_config()
    c.data.synth_hours = 1.0
    c.data.max_seconds = 4.0
    c.data.min_seconds = 1.0
    c.data.num_workers = 0
    c.data.num_buckets = 2

    c.train.steps = 800
    c.train.batch_size = 8
    c.train.log_every = 25
    c.train.eval_every = 200
    c.train.eval_batches = 4
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 2
    c.train.abx_probe.speakers = 12  # in-training word ABX on held-out voices

    c.optim.lr = 1e-3
    c.optim.warmup_fraction = 0.08

    m = c.model
    m.frontend = "logmel"
    m.conv_dim = (32, 32, 32, 32, 64, 64, 64)
    m.layer_norm_first = True
    m.feature_grad_scale = 1.0
    m.hidden_size = 128
    m.num_layers = 4
    m.num_heads = 4
    m.intermediate_size = 256
    m.num_conv_pos_embeddings = 8  # 160 ms (docstring)
    m.num_conv_pos_embedding_groups = 8
    m.hidden_dropout = 0.0
    m.attention_dropout = 0.0
    m.feat_proj_dropout = 0.0
    m.feat_quantizer_dropout = 0.0
    m.layerdrop = 0.0
    m.num_codevector_groups = 2
    m.num_codevectors_per_group = 64
    m.codevector_dim = 64
    m.proj_codevector_dim = 64

    c.objective.num_negatives = 20
    c.objective.mask_prob = 0.5
    c.objective.mask_length = 5
    c.objective.gumbel_temperature = (2.0, 0.5, 0.995)
    return c
