"""wav2vec 2.0 BASE pretraining (Baevski et al., 2020, "wav2vec 2.0", Table/Sec. 4.2).

  python -m ssl_jax.train --config=configs/w2v2_base.py --workdir=runs/w2v2_base \
      --config.data.path=/data/librispeech_shards

Paper: 12 post-LN blocks, d=768, FFN 3072, 12 heads; conv extractor 7x512 with kernels
(10,3,3,3,3,2,2) and strides (5,2,2,2,2,2,2) (320x down-sampling to 50 Hz); conv positional
embedding of width 128 in 16 groups; G=2 codebooks of V=320 entries, 256-d codevectors,
final projection 256; mask p=0.065, span M=10; K=100 distractors; kappa=0.1; diversity
weight alpha=0.1; feature penalty 10; Gumbel temperature 2 -> 0.5 decayed by 0.999995
per update; Adam, peak lr 5e-4, 8% warm-up then linear decay, 400k updates; batches of
at most 1.4M samples per GPU on 64 GPUs, 89.6M samples (the paper's "1.6 h"); crops of at
most 250k samples (15.6 s); dropout 0.1 in the Transformer, at the output of the feature
encoder and on the quantizer's input; layer drop 0.05; feature-encoder gradient scale 0.1.

Batch: counted in utterances (`train.batch_size`, DESIGN.md), so the paper's budget becomes
utterances x crop: 352 x 250,240 samples (250k rounded up to a whole frame, the longest
bucket) = 88.1M samples, 1.53 h, 1.7% under 89.6M. Like fairseq's `max_tokens` it bounds the
padded size of a batch; the speech in it is less by the padding to each length bucket (in
fairseq by what floor(1.4M / longest) crops leave unused). 352 divides over up to 32
devices; on 64, --config.train.batch_size=384 is 7% over.
Deviations: one LayerDrop draw per layer for the whole global batch (the reference draws on
each GPU, so there every layer runs on most of the batch at every update); a dropped layer
and its Adam moments are held for that update (`training.optimizer.hold`, PyTorch's rule for
a parameter without gradient; fairseq's legacy DDP, used by the paper's recipe, instead
zero-fills the gradient, which lets momentum and weight decay move the layer).
"""

from ml_collections import config_dict


def model_config(variant: str = "base") -> config_dict.ConfigDict:
    """Encoder hyper-parameters shared by the wav2vec 2.0 recipes."""
    m = config_dict.ConfigDict()
    m.conv_dim = (512,) * 7
    m.conv_kernel = (10, 3, 3, 3, 3, 2, 2)
    m.conv_stride = (5, 2, 2, 2, 2, 2, 2)
    m.conv_bias = False
    m.feat_extract_norm = "group"  # "group": GroupNorm on layer 0 (BASE); "layer": LayerNorm on every layer (LARGE)
    # "conv": the paper's waveform extractor above; "logmel": stacked log-mel frames (models/frontends.py);
    # "units": embedded k-means units of MFCC frames (Discrete BERT)
    m.frontend = "conv"
    m.logmel_bins = 80
    m.logmel_window = 400  # 25 ms Hann window
    m.logmel_hop = 160  # 10 ms; frames of `logmel_stack` hops: 20 ms, the conv extractor's rate
    m.logmel_stack = 2
    m.logmel_norm = "none"  # "utterance": standardise every band per utterance
    m.units = 0  # frontend "units" (Discrete BERT): k-means units of MFCC frames, embedded
    m.unit_dim = 256
    m.hidden_size = 768
    m.num_layers = 12
    m.num_heads = 12
    m.intermediate_size = 3072
    m.layer_norm_first = False  # False: post-LN (BASE); True: pre-LN, "stable layer norm" (LARGE)
    m.num_conv_pos_embeddings = 128
    m.num_conv_pos_embedding_groups = 16
    m.num_pos_conv_layers = 1  # data2vec-audio uses 5 layers of width 19
    m.relative_position_buckets = 0  # WavLM: 320 buckets, max distance 800; 0 = no relative bias
    m.relative_position_max_distance = 800
    m.hidden_dropout = 0.1
    m.attention_dropout = 0.1
    m.activation_dropout = 0.0
    m.feat_proj_dropout = 0.1
    m.feat_quantizer_dropout = 0.1  # on the quantizer's input only (fairseq dropout_features)
    m.layerdrop = 0.05
    m.feature_grad_scale = 0.1
    # Quantizer and projections of the pretraining head.
    m.num_codevector_groups = 2
    m.num_codevectors_per_group = 320
    m.codevector_dim = 256
    m.proj_codevector_dim = 256
    m.dtype = "float32"  # compute dtype; parameters stay float32
    m.remat = "none"  # or a policy that trades compute for memory: models/transformer.REMAT_POLICIES
    if variant == "large":
        m.feat_extract_norm = "layer"
        m.conv_bias = True
        m.hidden_size = 1024
        m.num_layers = 24
        m.num_heads = 16
        m.intermediate_size = 4096
        m.layer_norm_first = True
        m.codevector_dim = 768
        m.proj_codevector_dim = 768
        m.layerdrop = 0.2
    return m


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.seed = 0

    c.data = config_dict.ConfigDict()
    c.data.path = ""  # empty: the embedded eSpeak NG corpus, built once into the cache
    c.data.synth_hours = 1.0
    c.data.synth_seed = 0  # the embedded corpus' seed (independent of the training seed)
    c.data.train_split = "train"
    c.data.eval_split = "valid"
    c.data.max_seconds = 15.625  # 250k samples
    c.data.min_seconds = 2.0
    c.data.normalize = False  # BASE: no per-utterance normalisation (LARGE: True)
    c.data.num_workers = 4
    c.data.num_buckets = 4
    # Records the reader cannot use (undecodable, not mono, non-finite) are skipped and logged;
    # past this share of the records read the run stops with an error.
    c.data.max_unreadable_fraction = 0.05
    # Augmentation of training batches (ssl_jax/data/augment.py), drawn per utterance from the
    # data seed on the host. The paper uses none: every probability is 0 here. A probability
    # turns its transform on with the ranges beside it, e.g. --config.data.augment.noise.prob=0.5.
    a = c.data.augment = config_dict.ConfigDict()
    a.speed = config_dict.ConfigDict(dict(prob=0.0, factors=(0.9, 1.0, 1.1)))  # resampling
    a.pitch = config_dict.ConfigDict(dict(prob=0.0, semitones=(-3.0, 3.0)))  # pitch + formants
    a.reverb = config_dict.ConfigDict(dict(  # simulated shoebox room
        prob=0.0, rt60=(0.2, 0.8), room_min=(3.0, 3.0, 2.4), room_max=(10.0, 8.0, 4.0)))
    a.noise = config_dict.ConfigDict(dict(  # 1/f^beta noise, beta from `colours`
        prob=0.0, snr_db=(5.0, 20.0), colours=(0.0, 1.0, 2.0)))
    a.babble = config_dict.ConfigDict(dict(  # other utterances of the training split
        prob=0.0, snr_db=(5.0, 20.0), speakers=(3, 6)))
    a.telephone = config_dict.ConfigDict(dict(prob=0.0))  # 8 kHz, mu-law
    a.mix = config_dict.ConfigDict(dict(  # WavLM utterance mixing within the batch
        prob=0.0, max_fraction=0.5, energy_db=(-5.0, 5.0)))
    a.clean_copy = False  # batches also carry `clean_audio` (before all but speed)

    c.train = config_dict.ConfigDict()
    c.train.steps = 400_000
    c.train.batch_size = 352  # x 250,240-sample crops = 88.1M samples, the paper's 1.4M x 64 GPUs (docstring)
    c.train.grad_accum = 1
    c.train.log_every = 100
    c.train.eval_every = 5000
    c.train.eval_batches = 8
    # Across-speaker word ABX of every layer at each eval (training/abx_probe.py); 0 speakers = off.
    c.train.abx_probe = config_dict.ConfigDict(dict(speakers=0, triplets=4000, seed=0, path=""))
    c.train.checkpoint_every = 5000
    c.train.keep_checkpoints = 3
    # XLA's persistent compilation cache: "" = $SSL_JAX_CACHE/xla (shared by runs), "off", or a
    # folder. Every bucket shape is compiled at start-up; a resumed run reads them back.
    c.train.compilation_cache = ""
    # After warm-up, a logged metric under the objective's collapse floor (codebook perplexity,
    # target spread, accuracy near chance) is warned about; this many logged steps in a row
    # stop the run with a checkpoint. 0 = warn only.
    c.train.collapse_patience = 0
    # A step with a non-finite loss or gradient is skipped (counted in summary.json). This many
    # skipped steps in a row roll the run back to the latest checkpoint from before them, with
    # the data order and step keys of the next seed (seed + rollbacks, kept in the checkpoints);
    # after max_rollbacks rollbacks the next such run of steps stops with an error. 0 = off.
    c.train.rollback_after = 3
    c.train.max_rollbacks = 3
    # Warm start: any ssl_jax checkpoint (a workdir, a step folder, or one converted from
    # transformers/fairseq/torchaudio); its encoder, and heads where shapes match, with fresh
    # optimizer state. Empty: random initialisation.
    c.train.init_from = ""

    c.optim = config_dict.ConfigDict()
    c.optim.lr = 5e-4
    c.optim.warmup_fraction = 0.08
    c.optim.schedule = "linear"  # linear warm-up, then linear decay to 0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 10.0

    c.mesh = config_dict.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.model = model_config("base")

    c.objective = config_dict.ConfigDict()
    c.objective.name = "wav2vec2"
    c.objective.mask_prob = 0.65  # fairseq mask_prob: fraction of frames that start a span (p=0.065 x M=10)
    c.objective.mask_length = 10
    c.objective.min_masks = 2
    c.objective.num_negatives = 100
    c.objective.cross_sample_negatives = 0
    c.objective.temperature = 0.1  # kappa
    c.objective.diversity_weight = 0.1  # alpha
    c.objective.feature_penalty_weight = 10.0
    c.objective.gumbel_temperature = (2.0, 0.5, 0.999995)  # start, floor, decay per update
    return c
