"""SUPERB task settings on the real datasets (Yang et al., 2021, "SUPERB", Sec. 3-4).

  python -m ssl_jax.evaluate --config=configs/eval/superb.py --upstream=runs/w2v2_base --workdir=runs/superb \
      --config.tasks.asr.data=librispeech:/data/LibriSpeech \
      --config.tasks.pr.data=librispeech:/data/LibriSpeech --config.tasks.pr.reader_args.lexicon=/data/librispeech-lexicon.txt \
      --config.tasks.ks.data=speech_commands:/data/speech_commands_v0.01 \
      --config.tasks.ks.reader_args.test_root=/data/speech_commands_test_set_v0.01 \
      --config.tasks.sid.data=voxceleb1:/data/VoxCeleb1 --config.tasks.asv.data=voxceleb1:/data/VoxCeleb1 \
      --config.tasks.ic.data=fluent_speech_commands:/data/fluent_speech_commands_dataset \
      --config.tasks.er.data=iemocap:/data/IEMOCAP_full_release --config.tasks.er.reader_args.test_session=1

Each task names its dataset as `READER:PATH` (readers in ssl_jax/downstream/readers.py)
and its three splits. Settings after SUPERB and s3prl's downstream recipes: PR on
LibriSpeech train-clean-100 / dev-clean / test-clean with a linear CTC head (lr 1e-2, 100k
steps), ASR on the same splits with a 2-layer BiLSTM of 1024 units and character CTC (lr
1e-4, 200k steps, greedy decoding, no language model), KS on Speech Commands v0.01 (10 words +
silence + unknown; train/valid from the list files, test from the separately released test
set, `_silence_` cut from the background-noise recordings, class-balanced training), IC on Fluent Speech Commands (action, object, location all right), SID
on VoxCeleb1's iden_split, ER on IEMOCAP's four classes with excitement merged into
happiness, leave-one-session-out (run `--config.tasks.er.reader_args.test_session=K` for
K = 1..5 and average), ASV on VoxCeleb1 with the official veri_test trials; utterance tasks
use lr 1e-4 and batch 32.
Deviations: AdamW for every task; the ASV head is this project's x-vector-like head with
cosine scoring; PR needs a word -> phone lexicon (e.g. librispeech-lexicon.txt) because the
phone transcripts are derived from it; utterances with out-of-lexicon words are dropped and
counted in the prepared dataset's prepare.json.

Across-speaker word ABX on your own recordings (`ROOT/SPEAKER/WORD.wav`):
  --config.tasks_to_run="('abx',)" --config.tasks.abx.data=folder:/data/my_words
"""

from ml_collections import config_dict


def head(**kw) -> config_dict.ConfigDict:
    h = dict(
        data="", reader_args=config_dict.ConfigDict(), splits=("train", "valid", "test"),
        lr=1e-4, weight_decay=0.0, clip_norm=1.0,
        batch_size=32, eval_batch_size=32,
        max_steps=200_000, eval_every=1000, patience=20,
    )
    h.update(kw)
    return config_dict.ConfigDict(h)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    if arg:
        raise ValueError(f"superb takes no variant argument, got {arg!r}")
    c = config_dict.ConfigDict()
    c.seed = 0
    c.tasks_to_run = ("pr", "ks", "sid", "ic", "er", "asr", "asv")
    c.data = config_dict.ConfigDict()
    c.data.path = ""  # unused when every task names its dataset
    c.data.synth_seed = 0
    c.single_layer = -1
    c.extract = config_dict.ConfigDict()
    c.extract.batch_size = 8
    c.extract.cache_dir = ""
    c.target_rate = 50.0

    lexicon = config_dict.ConfigDict({"lexicon": ""})
    c.tasks = config_dict.ConfigDict()
    c.tasks.pr = head(title="PR (PER)", data="librispeech:", reader_args=lexicon, head="linear",
                      hidden=0, lstm_layers=0, lr=1e-2, max_steps=100_000)
    c.tasks.ks = head(title="KS (acc)", data="speech_commands:",
                      reader_args=config_dict.ConfigDict({"test_root": ""}), balanced=True)
    c.tasks.sid = head(title="SID (acc)", data="voxceleb1:", splits=("sid_train", "sid_valid", "sid_test"),
                       lr=1e-4)
    c.tasks.ic = head(title="IC (acc)", data="fluent_speech_commands:")
    c.tasks.er = head(title="ER (acc, 4 classes)", data="iemocap:",
                      reader_args=config_dict.ConfigDict({"test_session": 1}), max_steps=30_000, eval_every=500)
    c.tasks.asr = head(title="ASR (WER)", data="librispeech:", head="bilstm", hidden=1024, lstm_layers=2,
                       batch_size=32)
    c.tasks.asv = head(title="ASV (EER)", data="voxceleb1:", splits=("asv_train", "asv_valid", "asv_test"),
                       channels=512, embed_dim=256, trials_per_utterance=10, lr=5e-4, max_steps=200_000)
    c.tasks.abx = config_dict.ConfigDict(dict(title="word ABX across speakers (error)", data="folder:",
                                              splits=("abx_words",), max_triplets=50_000, distance="angular"))
    return c
