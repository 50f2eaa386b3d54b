"""PASE+, tiny: configs/pase_paper.py's workers and contamination on the data and schedule of
configs/w2v2_tiny.py.

  python -m ssl_jax.train --config=configs/pase_tiny.py --workdir=runs/pase_tiny

1 h embedded corpus, 4 s crops, batches of 8, 800 steps at peak lr 1e-3 (AdamW, warm-up,
linear decay, as the other tiny recipes); the paper's workers (waveform, LPS, FBANK, MFCC,
prosody; one hidden layer of 256) and distortions (reverberation, noise, one-talker babble,
telephone channel, targets from the clean crops). Deviation for a CPU: the encoder reads 80-bin
log-mel frames (25 ms window, 10 ms hop = 100 Hz, per-utterance CMVN) of the contaminated
crop instead of the waveform (a waveform extractor trained from scratch learns little in 800
CPU steps, configs/w2v2_tiny.py), then 3 unidirectional GRU layers of 256 (the paper's
recurrent layer after its conv stack); the targets still come from the clean waveform.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_tiny.py")).get_config()
    paper = load_config_module(os.path.join(_HERE, "pase_paper.py"))
    c.data.normalize = False  # the log-mel CMVN standardises the input
    paper.contaminate(c)
    m = c.model = config_dict.ConfigDict()
    m.architecture = "frames"
    m.frontend = "logmel"
    m.logmel_bins = 80
    m.logmel_window = 400  # 25 ms
    m.logmel_hop = 160  # 10 ms
    m.logmel_stack = 1  # 100 Hz, the paper's frame rate
    m.logmel_norm = "utterance"
    m.body = "rnn"
    m.cell = "gru"
    m.bidirectional = False
    m.hidden_size = 256
    m.num_layers = 3
    m.dropout = 0.0
    m.dtype = "float32"
    c.objective = paper.objective_config()
    return c
