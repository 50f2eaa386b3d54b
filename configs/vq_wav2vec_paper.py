"""vq-wav2vec with the Gumbel-softmax quantiser (Baevski et al., 2020, "vq-wav2vec:
Self-Supervised Learning of Discrete Speech Representations", ICLR).

  python -m ssl_jax.train --config=configs/vq_wav2vec_paper.py --workdir=runs/vq_wav2vec \\
      --config.data.path=/data/librispeech_shards

Paper: the wav2vec encoder (configs/wav2vec_paper.py; 512 channels, 100 Hz) followed by a
Gumbel-softmax quantiser of G = 2 groups of V = 320 entries (straight-through), the
temperature falling linearly from 2 to 0.5 over the first 70% of updates; a causal conv
aggregator of 12 layers of 512 with kernels 2..13 and skip connections; the wav2vec loss with
K = 8 steps and 10 distractors from the same utterance, no diversity loss; lr warmed up from
1e-7 to 5e-3 over 500 updates then cosine-annealed to 1e-6, batches of 10 crops of 150k
samples (read here as per GPU, on 8 GPUs), 400k updates. Deviations: as
configs/wav2vec_paper.py, plus a context network of 12 layers all of kernel 7 (73 frames of
receptive field; the paper's growing kernels give 79), the encoder's three extra 1x1 layers
replaced by its linear projection, a linear layer (not fairseq's two-layer MLP) giving the
code logits, and one codebook per group (fairseq's recipe shares one across groups).
"""

import os

from ml_collections import config_dict

from ssl_jax.models.frame_encoder import Config
from ssl_jax.training.config_check import load_config_module

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = load_config_module(os.path.join(_HERE, "wav2vec_paper.py")).get_config()
    c.model = config_dict.ConfigDict(Config(**{
        **c.model.to_dict(), "conv_context_kernel": 7, "num_layers": 12, "vq_layer": 0, "vq_groups": 2,
        "vq_codes": 320}).to_dict())
    c.objective = config_dict.ConfigDict(dict(
        name="vq_wav2vec",
        prediction_steps=8,  # K
        num_negatives=10,  # N, from the same utterance
        gumbel_temperature=(2.0, 0.5, 0.7),  # start, end, fraction of train.steps it falls over linearly
    ))
    return c
