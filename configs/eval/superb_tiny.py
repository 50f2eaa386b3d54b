"""SUPERB-style probing on the embedded eSpeak NG evaluation corpus (CPU-sized; Yang et al., 2021).

  python -m ssl_jax.evaluate --config=configs/eval/superb_tiny.py --upstream=fbank --workdir=/tmp/eval_fbank
  python -m ssl_jax.evaluate --config=configs/eval/superb_tiny.py \
      --upstream=fbank,mfcc,random:configs/w2v2_tiny.py,runs/w2v2_tiny --workdir=/tmp/eval_cmp

The `smoke` variant (`--config=configs/eval/superb_tiny.py:smoke`) runs a few steps per task.

Data: the evaluation corpus (`ssl_jax.data.synth.ensure_eval_corpus`, built once into the
cache), whose speakers are not in the pretraining corpus; its test splits hold 600 keyword
clips, 624 commands, 300 English sentences, 1,554 utterances for SID/ER, 24 held-out speakers
for ASV and two ABX sets (54 words x 24 speakers; triphones of 288 sentences).

Protocol as in SUPERB: frozen upstream, learnable softmax weights over all hidden states,
light heads, hyper-parameters fixed here and identical for every upstream, model selection
on the valid split, one score on the test split with a 95% bootstrap interval. Deviations (CPU budget): fewer steps and a
smaller ASR BiLSTM (1 layer of 128 units instead of 2 of 1024); frame-level heads read
adjacent frames stacked to about 50 Hz (FBANK's 100 Hz frames are stacked in pairs); every
layer is standardised with statistics of the task's own training utterances. ER here scores the corpus' four
prosody classes (neutral / fast_high / slow_low / loud), not emotions. ASV trains on the
training speakers and is scored on trials among the held-out speakers of `test_unseen`.
`abx` trains nothing: across-speaker ABX error (DTW over angular frame distances) of words
and of triphones, layer chosen on a dev half of the labels.
"""

from ml_collections import config_dict


def head(**kw) -> config_dict.ConfigDict:
    h = dict(
        data="",  # "": the embedded corpus of `data`; else "READER:PATH" (see downstream/readers.py)
        splits=("train", "valid", "test"),
        lr=1e-3, weight_decay=1e-4, clip_norm=5.0,
        batch_size=32, eval_batch_size=32,
        max_steps=1000, eval_every=100, patience=4,
        bucket_ratio=1.25,  # frame-level batches pad to a geometric grid of lengths with this ratio
    )
    h.update(kw)
    return config_dict.ConfigDict(h)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.seed = 0
    c.tasks_to_run = ("pr", "ks", "sid", "ic", "er", "asr", "asv", "abx")
    c.single_layer = -1  # >= 0: probe this hidden state alone instead of the weighted sum

    c.data = config_dict.ConfigDict()
    c.data.path = ""  # empty: the embedded evaluation corpus, built once into the cache
    c.data.synth_seed = 0  # the evaluation corpus' seed

    c.extract = config_dict.ConfigDict()
    c.extract.batch_size = 8
    c.extract.cache_dir = ""  # feature stores; empty: WORKDIR/features
    c.target_rate = 50.0  # frame-level heads: stack adjacent frames down to about this rate

    c.tasks = config_dict.ConfigDict()
    # Budgets let every head converge: a CTC head first sits on a plateau (blanks only), for
    # longer when an upstream's layers are a linear map of what FBANK holds, so early
    # stopping waits for `min_steps` (see probe.fit; benchmarks/probe_invariance.py).
    # The linear CTC head's plateau also depends on the learning rate, per upstream (a VQ-VAE's
    # layers: valid PER 0.91 at 1e-2, 0.34 at 3e-2; FBANK: 0.44 and 0.47): PR searches two
    # rates and keeps the better on valid, as SUPERB searches the learning rate per upstream.
    c.tasks.pr = head(title="PR (PER)", head="linear", hidden=0, lstm_layers=0, lr=1e-2, lrs=(1e-2, 3e-2),
                      batch_size=16, max_steps=5000, eval_every=250, patience=6, min_steps=3000)
    utterance = dict(lr=5e-3, max_steps=4000, eval_every=200, patience=5, min_steps=2000)
    c.tasks.ks = head(title="KS (acc, 10 words+sil+unk)", **utterance)
    c.tasks.sid = head(title="SID (acc)", **utterance)
    c.tasks.ic = head(title="IC (acc, action+object+location)", **utterance)
    c.tasks.er = head(title="ER* prosody classes (acc)", **utterance)
    # The corpus' sentences are random word sequences: WER stays near 100% for every upstream
    # here, so the ASR head is selected on CER (both are reported).
    c.tasks.asr = head(title="ASR (WER, chars, greedy)", head="bilstm", hidden=128, lstm_layers=1,
                       lr=5e-3, batch_size=16, max_steps=1600, eval_every=200, patience=3, min_steps=800,
                       select_metric="cer")
    c.tasks.asv = head(title="ASV (EER, unseen speakers)", splits=("train", "valid", "test_unseen"),
                       channels=128, embed_dim=64, trials_per_utterance=12,
                       lr=2e-3, batch_size=16, max_steps=1200, eval_every=100, patience=4, min_steps=600)
    c.tasks.abx = config_dict.ConfigDict(dict(
        title="ABX across speakers (error)", data="", splits=("abx_words", "abx_sentences"),
        max_triplets=40_000, distance="angular"))
    if arg == "smoke":  # a minute-long end-to-end check (tests), not a measurement
        for name, t in c.tasks.items():
            if name == "abx":
                t.max_triplets = 2000
                continue
            t.max_steps, t.eval_every, t.batch_size, t.eval_batch_size, t.min_steps = 20, 10, 8, 8, 0
            t.bucket_ratio = 2.0
        c.tasks.asr.hidden = 16
        c.tasks.asv.channels, c.tasks.asv.embed_dim = 16, 8
    elif arg:
        raise ValueError(f"unknown superb_tiny variant {arg!r}; expected none or 'smoke'")
    return c
