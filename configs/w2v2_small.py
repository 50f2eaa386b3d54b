"""wav2vec 2.0, small: a log-mel wav2vec 2.0 for under an hour and a half on 2 CPU cores.

  python -m ssl_jax.train --config=configs/w2v2_small.py --workdir=runs/w2v2_small

The objective of configs/w2v2_base.py (Baevski et al., 2020): masked spans of the encoder
input, the Transformer output at each masked frame picks the Gumbel-quantised target of that
frame out of K distractors, plus the codebook diversity term. It is configs/w2v2_tiny.py made
wider, deeper and longer; deviations from the paper, for this compute (benchmarks/w2v2_sweep.py
records the evidence for the front end):
- log-mel front end (`model.frontend = "logmel"`, models/frontends.py): 80 bands, 25 ms
  window, 10 ms hop, two frames stacked (50 Hz, the conv extractor's rate), then the
  feature projection. A waveform extractor trained from scratch at this compute learns far
  less (the sweep compares both); the quantiser then reads the log-mel frames, as the
  targets of MelHuBERT (Lin et al., 2023) are computed from log-mel;
- a 6-layer d=256 pre-LN Transformer, FFN 1024, 4 heads, a 64-frame (1.28 s) conv positional
  embedding; 2 x 160 codebook entries of 128-d;
- spans of 5 frames with mask_prob 0.5 (about 40% of frames masked), K=50 distractors;
- 4 s crops, batches of 16 utterances, peak lr 1e-3 (8% warm-up, linear decay), no dropout or
  layer drop, a Gumbel temperature that reaches its floor within the run;
- a 10-hour embedded corpus (`data.synth_hours`; 11.2 h, 594 speakers), built once into the
  cache (223 s on 2 busy cores).

Measured (1,400 steps in 73 min with the 2 cores shared by other runs; `python -m
ssl_jax.evaluate --config=configs/eval/superb_tiny.py --upstream=fbank,runs/w2v2_small`):
better than FBANK on PR (38.7 vs 45.1 PER), KS (82.0 vs 69.8), IC (40.5 vs 11.5) and ER
(58.8 vs 53.0), worse on SID (78.3 vs 83.5) and ASR (CER 40.3 vs 37.4), level on ASV (EER
11.3); across-speaker word ABX 6.4% vs 9.3%, from layer 0. Its deeper layers lose word ABX
during training (the in-training probe: 6.3-6.8% in every layer at step 0; 7.0, 8.1, 10.2,
11.3, 10.7, 10.1, 10.2% at step 1,400), which an 8-frame positional conv stops in w2v2_tiny.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module


def _tiny():
    """configs/w2v2_tiny.py, loaded by path so the config works from any working directory."""
    return load_config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "w2v2_tiny.py"))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = _tiny().get_config()  # log-mel, pre-LN, no dropout or layer drop, 4 s crops, lr 1e-3
    c.data.synth_hours = 10.0

    c.train.steps = 1400
    c.train.batch_size = 16
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.checkpoint_every = 200

    m = c.model
    m.hidden_size = 256
    m.num_layers = 6
    m.num_heads = 4
    m.intermediate_size = 1024
    m.num_conv_pos_embeddings = 64
    m.num_conv_pos_embedding_groups = 16
    m.num_codevectors_per_group = 160
    m.codevector_dim = 128
    m.proj_codevector_dim = 128

    c.objective.num_negatives = 50
    c.objective.gumbel_temperature = (2.0, 0.5, 0.998)
    return c
