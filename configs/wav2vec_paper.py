"""wav2vec (Schneider et al., 2019, "wav2vec: Unsupervised Pre-training for Speech
Recognition").

  python -m ssl_jax.train --config=configs/wav2vec_paper.py --workdir=runs/wav2vec \\
      --config.data.path=/data/librispeech_shards

Paper: a 5-layer conv encoder of 512 channels on the waveform, kernels (10, 8, 4, 4, 4),
strides (5, 4, 2, 2, 2) (100 Hz); a causal conv context network of 9 layers, kernel 3, 512
channels (receptive field 210 ms); K = 12 affine steps, 10 distractors from the same
utterance, the binary contrastive loss with each distractor weighing 1 (lambda = N times an
expectation); Adam, lr warmed up from 1e-7 to 5e-3 over 500 updates then cosine-annealed to
1e-6; crops of at most 150k samples, up to 1.5M samples (10 crops) per GPU on 8 GPUs; 400k
updates (our reading of the LibriSpeech 960 h runs). Deviations (objectives/wav2vec.py,
models/frame_encoder.py): LayerNorm instead of GroupNorm, no log-compression of the encoder
output, a linear projection of it, and zero instead of replication padding in the causal
convolutions; predictions start 1 frame ahead (fairseq: 3); warm-up from 0 and cosine decay
to 0; the base recipe's clipping at norm 10.
"""

import os

from ml_collections import config_dict

from ssl_jax.models.frame_encoder import Config
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "w2v2_base.py")).get_config()
    c.data.max_seconds = 9.375  # 150k samples
    c.data.min_seconds = 2.0
    c.train.steps = 400_000
    c.train.batch_size = 80  # 10 crops of 150k per GPU x 8 GPUs (1.5M samples per GPU)
    c.optim.lr = 5e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_fraction = 500 / 400_000
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.model = config_dict.ConfigDict(Config(
        frontend="conv", conv_dim=(512,) * 5, conv_kernel=(10, 8, 4, 4, 4), conv_stride=(5, 4, 2, 2, 2),
        feat_extract_norm="layer", body="conv", causal=True, conv_context_kernel=3, hidden_size=512,
        num_layers=9).to_dict())
    c.objective = config_dict.ConfigDict(dict(
        name="wav2vec",
        prediction_steps=12,  # K
        num_negatives=10,  # N, from the same utterance
    ))
    return c
