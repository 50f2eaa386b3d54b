"""CTC fine-tuning of a pretrained tiny encoder on the embedded corpus (Baevski et al., 2020, Sec. 3.3/5).

  python -m ssl_jax.finetune --config=configs/finetune_ctc_tiny.py --upstream=runs/w2v2_tiny --workdir=runs/ft_tiny

As in wav2vec 2.0 fine-tuning: a randomly initialised linear layer over characters (CTC,
blank + letters + apostrophe + word boundary) on the Transformer output; the convolutional
feature extractor stays frozen throughout; for the first `freeze_encoder_steps` updates only
the output layer trains; time masking of the projected features with the learned mask
embedding (mask_prob, mask_length); Adam with warm-up, hold, decay (tri-stage) schedule;
greedy decoding, no language model. Model selection on valid CER (`train.select_metric`; the
corpus' random word sequences keep WER near 100%, as for superb_tiny's ASR probe), score on test.
Deviations (CPU size): 4,000 updates of 8 utterances, English utterances of at most `max_seconds`.
Measured on the evaluation corpus' ASR splits (`--config.data.path=$SSL_JAX_CACHE/evalcorpus-v1-s0`,
w2v2_tiny pretrained 800 steps, 16 min on 2 CPU cores): test CER 37.6 [36.4, 38.8], level with
superb_tiny's FBANK BiLSTM probe (37.4, p = 0.65); 600 updates reach only 61% valid CER, and
3,000 at lr 1e-3 with mask_prob 0.25 reach 38.8. From configs/w2v2_small.py (1,400 steps, 32 min)
the same recipe goes below the probe: test CER 36.3 [35.1, 37.5] at `--config.optim.lr=1e-3`
(paired bootstrap against the probe: -1.1 points, p = 0.05; 33 min) and 36.6 [35.5, 37.8] at
2e-3 (p = 0.12).
"""

from ml_collections import config_dict


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.seed = 0

    c.data = config_dict.ConfigDict()
    c.data.path = ""  # empty: the embedded corpus, built once into the cache
    c.data.synth_hours = 1.0
    c.data.synth_seed = 0
    c.data.target = "chars"  # "chars" (ASR, WER) or "phonemes" (PER)
    c.data.max_seconds = 8.0  # longer training utterances are skipped
    c.data.splits = ("train", "valid", "test")
    c.data.num_buckets = 6  # padded lengths evenly spaced up to the longest utterance

    c.train = config_dict.ConfigDict()
    c.train.steps = 4000
    c.train.batch_size = 8
    c.train.freeze_encoder_steps = 150  # only the output layer trains before this update
    c.train.eval_every = 250
    c.train.eval_batch_size = 8
    c.train.log_every = 25
    c.train.mask_prob = 0.4  # span masking as in pretraining (objectives/masking.py): 8% of frames start a span
    c.train.mask_length = 5
    c.train.select_metric = "cer"  # "" = the task's metric: WER for chars, PER for phonemes
    # An evaluate result folder of one upstream on the same task and test set (e.g. the FBANK
    # probe of superb_tiny: EVAL_DIR/fbank): the test metrics get a paired bootstrap against it.
    c.train.compare_to = ""

    c.optim = config_dict.ConfigDict()
    c.optim.lr = 2e-3
    c.optim.stages = (0.1, 0.4, 0.5)  # tri-stage: warm-up, hold, decay fractions of train.steps
    c.optim.final_lr_scale = 0.05
    c.optim.clip_norm = 5.0
    c.optim.weight_decay = 0.0
    if arg == "smoke":
        c.train.steps, c.train.freeze_encoder_steps, c.train.eval_every = 6, 3, 3
        c.train.batch_size = c.train.eval_batch_size = 4
        c.data.max_seconds = 4.0
        c.data.num_buckets = 1
    elif arg:
        raise ValueError(f"unknown finetune_ctc_tiny variant {arg!r}; expected none or 'smoke'")
    return c
