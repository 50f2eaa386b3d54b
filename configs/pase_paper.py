"""PASE+ pretraining (Ravanelli et al., 2020, "Multi-task self-supervised learning for Robust
Speech Recognition"; the workers of Pascual et al., 2019, PASE): ssl_jax/objectives/pase.py.

  python -m ssl_jax.train --config=configs/pase_paper.py --workdir=runs/pase_paper \
      --config.data.path=/data/librispeech_50h_shards

Paper (and the released PASE+ configuration): a waveform encoder of 8 convolutions (kernels
251, 20, 11 x 6; strides 1, 10, 2, 1, 2, 1, 2, 2 = 160x down-sampling, 100 Hz; 64, 64, 128,
128, 256, 256, 512, 512 channels) and a recurrent layer, 256-d output; workers of one hidden
layer of 256 units regressing, per frame, the clean waveform (L1) and the clean LPS, FBANK,
MFCC and prosody (MSE), equal weights; online contamination of the input with
reverberation (p = 0.5), additive noise (p = 0.4, SNR 0-10 dB), overlapped speech (p = 0.1,
one talker at 5-10 dB) and band-limiting to 8 kHz sampling (p = 0.25); 2 s chunks in batches
of 16, Adam at lr 1e-3 (the encoder's; the workers' 5e-4) with polynomial decay, 200 epochs
of a 50 h LibriSpeech subset (the released checkpoint is epoch 199; ~180k updates at one
chunk per utterance and epoch, an estimate).

Deviations: a plain first convolution for SincNet; LayerNorm and GELU in the conv blocks for
BatchNorm and PReLU, no dense skip connections from the conv blocks; one GRU of 256 units for
the QRNN of 512 and its 256-d linear output; one learning rate for encoder and workers, linear
decay (polynomial of power 1) without warm-up; contamination from ssl_jax/data/augment.py
(simulated rooms for the measured impulse responses, coloured noise for the DIRHA noises,
babble of one other training utterance for the overlapped speech, the G.711 telephone channel,
which adds mu-law companding, for the 16-to-8 kHz filter); the clipping (p = 0.2), temporal
chopping (p = 0.2) and band-drop (p = 0.35) distortions are left out; per-utterance target
standardisation and the worker simplifications of the objective's docstring; the MFCC worker
regresses 20 coefficients without deltas, as the other frame workers.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def contaminate(c: config_dict.ConfigDict) -> None:
    """PASE+'s distortions (docstring) on the training crops, targets from the clean copies."""
    a = c.data.augment
    a.reverb.prob = 0.5
    a.noise.prob = 0.4
    a.noise.snr_db = (0.0, 10.0)
    a.babble.prob = 0.1
    a.babble.speakers = (1, 1)
    a.babble.snr_db = (5.0, 10.0)
    a.telephone.prob = 0.25
    a.clean_copy = True


def objective_config() -> config_dict.ConfigDict:
    o = config_dict.ConfigDict()
    o.name = "pase"
    o.workers = ("wave", "lps", "fbank", "mfcc", "prosody")
    o.l1_workers = ("wave",)  # the released PASE+ waveform decoder's L1; MSE for the others
    o.worker_hidden = 256
    o.window = 400  # samples each target frame reads (25 ms); the hop is the encoder's frame step
    o.mfcc_coefficients = 20
    o.fbank_bins = 40
    o.f0_range = (60.0, 400.0)  # Hz, the pitch tracker's lags
    return o


def model_config() -> config_dict.ConfigDict:
    m = config_dict.ConfigDict()
    m.architecture = "frames"
    m.frontend = "conv"
    m.conv_dim = (64, 64, 128, 128, 256, 256, 512, 512)
    m.conv_kernel = (251, 20, 11, 11, 11, 11, 11, 11)
    m.conv_stride = (1, 10, 2, 1, 2, 1, 2, 2)  # 160x: 100 Hz
    m.feat_extract_norm = "layer"
    m.body = "rnn"
    m.cell = "gru"  # stands in for the QRNN
    m.bidirectional = False
    m.hidden_size = 256
    m.num_layers = 1
    m.dropout = 0.0
    m.dtype = "float32"
    return m


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.max_seconds = 2.0  # 32,000-sample chunks
    c.data.min_seconds = 2.0
    c.data.normalize = False
    contaminate(c)
    c.train.batch_size = 16
    c.train.steps = 180_000
    c.optim.lr = 1e-3
    c.optim.warmup_fraction = 0.0
    c.optim.schedule = "linear"
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.model = model_config()
    c.objective = objective_config()
    return c
