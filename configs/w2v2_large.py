"""wav2vec 2.0 LARGE pretraining (Baevski et al., 2020, "wav2vec 2.0", Sec. 4.2), two recipes.

  python -m ssl_jax.train --config=configs/w2v2_large.py:lv60k --workdir=runs/w2v2_large_lv60k \
      --config.data.path=/data/librilight_shards
  python -m ssl_jax.train --config=configs/w2v2_large.py:ls960 --workdir=runs/w2v2_large_ls960 \
      --config.data.path=/data/librispeech_shards

`lv60k` (the default, the paper's headline LARGE) is pretrained on LibriVox/Libri-Light (LV-60k,
53.2k h); `ls960` on LibriSpeech-960.

Both: 24 blocks, d=1024, FFN 4096, 16 heads; conv extractor 7x512; G=2 codebooks of V=320
entries, 768-d codevectors and final projection (d/G = 384); mask p=0.065 (fairseq
mask_prob 0.65), span M=10; K=100 distractors; kappa=0.1; diversity weight 0.1; Gumbel
temperature 2 -> 0.1 decayed by 0.999995 per update; Adam, peak lr 3e-4, 8% warm-up then
linear decay; crops of at most 320k samples (20 s), at most 1.2M samples per GPU on 128 GPUs
(153.6M samples, the paper's "2.7 h"); dropout 0.1 in the Transformer, at the output of the
feature encoder and on the quantizer's input. Activations are recomputed in the backward pass
(remat) to fit 20 s crops.

lv60k: 600k updates; no layer drop; LayerNorm after every conv layer (and conv bias), pre-LN
("stable layer norm") blocks, per-utterance normalised waveforms (the released
`facebook/wav2vec2-large-lv60` layout); no feature penalty and the full gradient into the
feature encoder (the paper keeps those two regularisers for the smaller LibriSpeech; fairseq's
wav2vec2_large_librivox.yaml: loss_weights [0.1, 0], feature_grad_mult 1.0).
ls960: 250k updates; layer drop 0.2; feature penalty 10 and encoder gradients scaled by 0.1;
the BASE extractor (GroupNorm on the first conv layer, no conv bias, raw waveforms not
normalised: the paper's "slightly different encoder architecture" for LibriSpeech) and
post-LN blocks (the released `facebook/wav2vec2-large`, do_stable_layer_norm false).

Batch: in utterances (`train.batch_size`, DESIGN.md): 480 x 320,000-sample crops = 153.6M
samples, the paper's budget exactly; it divides over up to 32 devices (on 64 or 128,
--config.train.batch_size=512 is 6.7% over). As for BASE, this bounds the padded batch; the
speech in it is less by the padding to each length bucket.
Deviations: LayerDrop as in configs/w2v2_base.py (one draw per layer for the global batch;
a dropped layer and its Adam moments are held for that update). fairseq's
wav2vec2_large_librivox.yaml differs from the paper's text on lr (0.005), updates (1M) and
dropout (0 everywhere); these configs follow the paper.
"""

import os

from ml_collections import config_dict

from ssl_jax.training.config_check import load_config_module

VARIANTS = ("lv60k", "ls960")


def _base():
    """configs/w2v2_base.py, loaded by path so the config works from any working directory."""
    return load_config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "w2v2_base.py"))


def _variant(arg: str | None) -> str:
    name = (arg or "lv60k").strip()
    if name.startswith("variant="):
        name = name[len("variant="):]
    if name not in VARIANTS:
        raise ValueError(f"unknown w2v2_large variant {arg!r}; valid: {', '.join(VARIANTS)} (default lv60k)")
    return name


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    variant = _variant(arg)
    base = _base()
    c = base.get_config()
    c.model = base.model_config("large")  # LayerNorm extractor, conv bias, pre-LN, d=1024, 768-d codes
    m = c.model
    m.remat = "full"  # recompute each layer in the backward pass (transformer.REMAT_POLICIES)
    m.hidden_dropout = 0.1
    m.attention_dropout = 0.1
    m.feat_proj_dropout = 0.1
    m.feat_quantizer_dropout = 0.1

    c.data.max_seconds = 20.0  # 320k samples
    c.train.batch_size = 480  # x 320,000-sample crops = 153.6M samples = 1.2M x 128 GPUs
    c.optim.lr = 3e-4
    c.optim.warmup_fraction = 0.08
    c.objective.gumbel_temperature = (2.0, 0.1, 0.999995)

    c.mesh.data = -1
    c.mesh.fsdp = 8  # shard parameters and optimizer state within a host
    c.mesh.tensor = 1

    if variant == "lv60k":
        c.data.normalize = True
        c.train.steps = 600_000
        m.layerdrop = 0.0
        m.feature_grad_scale = 1.0
        c.objective.feature_penalty_weight = 0.0
    else:
        c.data.normalize = False
        c.train.steps = 250_000
        m.feat_extract_norm = "group"
        m.conv_bias = False
        m.layer_norm_first = False
        m.layerdrop = 0.2
        m.feature_grad_scale = 0.1
        c.objective.feature_penalty_weight = 10.0
    return c
