"""wav2vec 2.0 LARGE pretraining (Baevski et al., 2020, "wav2vec 2.0", Sec. 4.2).

  python -m ssl_jax.train --config=configs/w2v2_large.py --workdir=runs/w2v2_large \
      --config.data.path=/data/librilight_shards

Paper: 24 pre-LN ("stable layer norm") blocks, d=1024, FFN 4096, 16 heads; conv extractor
7x512 with a LayerNorm after every conv layer (and conv bias); G=2 codebooks of V=320
entries, 768-d codevectors and final projection; mask p=0.065 (fairseq mask_prob 0.65), span
M=10; K=100 distractors; kappa=0.1; diversity weight 0.1; feature penalty 10; Gumbel
temperature 2 -> 0.1 decayed by 0.999995 per update; Adam, peak lr 3e-4, 8% warm-up then
linear decay, 250k updates on LibriSpeech-960 (600k on LibriVox); crops of at most 320k
samples (20 s); per-utterance normalised audio; dropout 0.1, layer drop 0.2, feature-encoder
gradient scale 0.1; activations recomputed in the backward pass (remat) to fit 20 s crops.
Deviation: the batch is counted in utterances (`train.batch_size`), as DESIGN.md says.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module


def _base():
    """configs/w2v2_base.py, loaded by path so the config works from any working directory."""
    return load_config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "w2v2_base.py"))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    base = _base()
    c = base.get_config()
    c.model = base.model_config("large")
    c.model.remat = True

    c.data.max_seconds = 20.0  # 320k samples
    c.data.normalize = True

    c.train.steps = 250_000
    c.train.batch_size = 1024

    c.optim.lr = 3e-4
    c.optim.warmup_fraction = 0.08

    c.mesh.data = -1
    c.mesh.fsdp = 8  # shard parameters and optimizer state within a host
    c.mesh.tensor = 1

    c.objective.gumbel_temperature = (2.0, 0.1, 0.999995)
    return c
