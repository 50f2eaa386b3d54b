"""The embedded speech corpora: multi-speaker speech synthesised in-process with eSpeak NG.

`python -m ssl_jax.data.synth --out DIR [--hours H] [--seed S]` writes the pretraining
corpus, `python -m ssl_jax.data.synth --eval --out DIR [--seed S]` the evaluation corpus:
16 kHz shards (`ssl_jax.data.shards`), per-split manifests and `DIR/corpus.json`. They give
the project labels for every downstream task without any download:

* speakers: espeak voice (7 English accents and 18 other languages in the pretraining
  corpus) x voice variant (41, formant and Klatt synthesis, `VARIANTS`) x base F0, pitch
  range, rate, word gap and level (`speaker_catalogue`: 1,025 speakers, of which a corpus
  takes more as its hours grow, `speaker_count`: 160 at 1 h, 400 at 5 h, about 600 at
  10 h); each pretraining utterance jitters its speaker's settings a little
  (`utterance_prosody`), and is set to an active speech level; `test_unseen` holds speakers
  absent from the other splits;
* text and IPA phones from espeak itself (`ssl_jax.data.espeak.split_ipa` states the rule),
  and an `alignment` of every utterance: phones and words with `[start, end)` positions in
  samples of the stored 16 kHz audio (`ssl_jax.data.espeak.align` states the rule);
* tasks: `sentence` (random word sequences from wordfreq vocabularies, every language),
  `keyword` (Speech-Commands-like 1 s clips of ten English command words, `_unknown_` other
  words, and `_silence_` clips of low-level noise without speech), `intent`
  (Fluent-Speech-Commands-like English commands with action / object / location labels);
* speaking styles `neutral`, `fast_high`, `slow_low`, `loud`. These are PROSODY classes made
  by changing espeak's rate, pitch and pitch range and the level (espeak's volume in the
  evaluation corpus, a gain in the pretraining corpus); they are not emotions, and a model
  that separates them has learnt tempo, pitch and loudness, nothing about affect.

The evaluation corpus (`build_eval_corpus`) is sized for ranking upstream models: its own
speakers (voice variants no pretraining speaker uses, so scores measure generalisation to new
voices; 17 of the pretraining voices), balanced keyword and intent classes, hundreds of test
items per task, held-out speakers for verification trials, and two ABX splits of minimal-pair
English words (`abx_words`, one clip per word and speaker) and running speech made of them
(`abx_sentences`) for across-speaker ABX discrimination (Schatz et al., 2013; the
Libri-light / ZeroSpeech ABX protocol, Kahn et al., 2020, arXiv:1912.07875);
`ensure_eval_abx_words` builds the `abx_words` split alone, for probes during training.

`_silence_` clips belong to no speaker: their `speaker` is `_none_` and `language` `none`,
and their alignment is empty.

Every utterance is planned in the main process from the seed (text, voice, prosody, noise
seed), rendered by worker processes with a freshly loaded espeak (see `ssl_jax.data.espeak`),
and written in plan order, so the same seed gives byte-identical shards and manifests for any
number of workers.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import functools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ssl_jax.data import sentences
from ssl_jax.data.shards import SAMPLE_RATE, ShardWriter

# Bump a version whenever the bytes a plan renders to, or the manifest fields, change: the
# cache folder names carry it, so an older corpus is never reused silently.
FORMAT_VERSION = 3  # 2: manifests carry `alignment`; 3: wider speaker catalogue, jitter, levels
FORMAT = f"ssl_jax-synth-v{FORMAT_VERSION}"
EVAL_FORMAT_VERSION = 1
EVAL_FORMAT = f"ssl_jax-evalcorpus-v{EVAL_FORMAT_VERSION}"
SPLITS = ("train", "valid", "test", "test_unseen")
EVAL_SPLITS = SPLITS + ("abx_words", "abx_sentences")
STYLES = ("neutral", "fast_high", "slow_low", "loud")
SILENCE_SPEAKER = "_none_"
MIN_SECONDS, MAX_SECONDS = 1.0, 15.0

STYLE_NOTE = (
    "Speaking styles are prosody classes, not emotions: fast_high = faster speech at higher "
    "pitch, slow_low = slower speech at lower pitch with a narrower pitch range, loud = higher "
    "amplitude with a wider pitch range, neutral = the speaker's base settings. They are made "
    "with espeak's rate/pitch/range/volume controls and carry no affective content.")
PRETRAIN_STYLE_NOTE = (
    "Speaking styles are prosody classes, not emotions: fast_high = faster speech at higher "
    "pitch, slow_low = slower speech at lower pitch with a narrower pitch range, loud = a "
    "higher speech level with a wider pitch range, neutral = the speaker's base settings. "
    "They are made with espeak's rate/pitch/range controls and a gain on the audio, and carry "
    "no affective content.")

# espeak voice -> wordfreq language of its vocabulary. The voice name is the `language` label.
ENGLISH_VOICES = ("en-us", "en-us-nyc", "en-gb-x-rp", "en-gb-scotland", "en-029",
                  "en-gb-x-gbclan", "en-gb-x-gbcwmd")
OTHER_VOICES = ("de", "fr", "es", "it", "pt", "nl", "sv", "pl", "cs", "fi")
# The evaluation corpus speaks these; the pretraining corpus adds `EXTRA_VOICES`, languages
# of other families and phone inventories (Catalan, Danish, Hungarian, Romanian, Turkish,
# Norwegian, Lithuanian, Indonesian) that espeak speaks and wordfreq has words for.
EVAL_VOICES = ENGLISH_VOICES + OTHER_VOICES
EXTRA_VOICES = ("ca", "da", "hu", "ro", "tr", "nb", "lt", "id")
ALL_VOICES = EVAL_VOICES + EXTRA_VOICES
VOICE_LANG = {**{v: "en" for v in ENGLISH_VOICES}, **{v: v for v in OTHER_VOICES + EXTRA_VOICES}}
# Share of the pretraining speakers per voice, relative: an English accent has twice the
# speakers of another language, so that about 45% of the speakers speak English.
VOICE_WEIGHT = {v: 2 if VOICE_LANG[v] == "en" else 1 for v in ALL_VOICES}

# espeak voice variants (espeak-ng-data/voices/!v) of the pretraining speakers; none of them
# is an evaluation variant. Each variant file sets formant frequencies and strengths (the
# vocal tract), voicing, breath, F0 range and intonation; `KLATT_VARIANTS` synthesise with
# espeak's Klatt synthesiser (other glottal source and formant filters) instead of its
# harmonic one. Selection: each variant spoke the same five sentences in five languages and
# was kept when its speech is periodic (at the F0 the catalogue gives it, the normalised
# autocorrelation of 79-100% of the active 64 ms frames of a voiced English sentence peaks
# above 0.5 at a lag of 2-20 ms, against 0-54% for the whispered, croaky and excluded Klatt
# variants; tests/data/test_synth.py measures it), pYIN finds voicing in its English
# sentence (50-97% of the frames, 0-10% for those), its
# spectrogram shows formant tracks, and its voiceless fricatives are no more than 8 dB
# weaker against its vowels than the median variant's (-14 dB in power; voicing-heavy
# variants reach -23 to -28 dB, under the noise floor of quiet consonants); the others are
# `EXCLUDED_VARIANTS`.
FORMANT_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                    "Alicia", "Marco", "Storm", "gustave", "iven3", "iven4", "john", "paul",
                    "pedro", "sandro", "zac")
KLATT_VARIANTS = ("klatt3", "klatt4", "klatt5", "klatt6", "Reed", "adam", "benjamin", "david",
                  "edward", "edward2", "mike2")
VARIANTS = FORMANT_VARIANTS + KLATT_VARIANTS
EXCLUDED_VARIANTS = {
    **dict.fromkeys(("klatt", "klatt2"), "Klatt source without periodic voicing (periodic in "
                    "29-34% of active frames, pYIN voiced in 0-10%)"),
    **dict.fromkeys(("caleb", "whisper", "whisperf"), "whispered (no voicing)"),
    **dict.fromkeys(("croak", "grandpa"), "flutter 20: F0 too irregular for pYIN (croaky)"),
    **dict.fromkeys(("Demonic", "UniRobot", "anikaRobot", "announcer", "robosoft",
                     "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
                     "robosoft7", "robosoft8"), "novelty voice (robotic, echo, distortion)"),
    **dict.fromkeys(("RicishayMax", "RicishayMax2", "RicishayMax3"), "long echo"),
    "Tweaky": "third formant at twice its frequency",
    "fast": "espeak's speed test voice",
    "Mr serious": "a name with a space",
    **dict.fromkeys(("Gene", "Gene2", "Jacky", "antonio", "ed", "iven", "iven2"),
                    "voiceless fricatives 22-28 dB below the vowels (median variant 14 dB)"),
    "steph3": "the evaluation variant steph with other voicing",
    "AnxiousAndy": "the evaluation variant Andy's formant frequencies",
}
# Variants whose F0 range (the `pitch` line of the variant file) is centred at or above this
# speak with a female-like F0; the catalogue gives them female F0 targets.
FEMALE_F0 = 140.0
# Speaker F0 targets (median F0 in Hz): log-normal around `median` with `spread`, clipped.
F0_TARGETS = {"male": (115.0, 0.15, 80.0, 170.0), "female": (205.0, 0.12, 150.0, 280.0)}
# espeak's pitch parameter multiplies a variant's F0; measured median F0 ratios to pitch 50
# (m1, f1 and klatt4, one English sentence each): pitch -> ratio.
PITCH_RATIO = ((0, 0.68), (25, 0.83), (50, 1.0), (75, 1.30), (99, 1.72))
CATALOGUE_SEED = 0x5EA4E2  # fixes speaker prosody: speaker ids mean the same in every corpus

# Per style: (rate factor, pitch offset, range offset, espeak volume). The pretraining corpus
# sets the level with a gain instead of espeak's volume: `STYLE_LEVEL_DB`.
STYLE_PROSODY = {
    "neutral": (1.0, 0, 0, 60),
    "fast_high": (1.45, 22, 0, 60),
    "slow_low": (0.7, -22, -15, 60),
    "loud": (1.05, 6, 25, 130),
}
# Pretraining levels: the active speech level (ITU-T P.56-like, see `active_level_db`) of a
# neutral utterance is `NEUTRAL_LEVEL_DB` dBFS plus the speaker's own offset (+-3 dB); loud
# adds 20 log10(130 / 60) dB, espeak's volume ratio of the evaluation corpus. Peaks stay
# below `PEAK_DBFS`: a louder utterance is turned down to it.
NEUTRAL_LEVEL_DB = -25.0
STYLE_LEVEL_DB = {"neutral": 0.0, "fast_high": 0.0, "slow_low": 0.0, "loud": 6.7}
PEAK_DBFS = -1.0
# espeak compresses its output near full scale, so it renders at a volume that keeps peaks
# below `RENDER_PEAK` of full scale (rendering again quieter when one exceeds it); the level
# is set afterwards on the float audio.
RENDER_VOLUME = 30
RENDER_PEAK = 0.7
# Alignment silence (`ssl_jax.data.espeak.align`) of pretraining utterances: samples at or
# below this fraction of the peak (-50 dB), so that echo tails in closures are silence.
ALIGN_SILENCE = 0.003
# Speech-to-noise ratio of the low-level noise under every pretraining utterance, dB.
SNR_DB = (35.0, 49.0)
# Per-utterance jitter of a speaker's settings (standard deviations; drawn values are clipped
# at two of them): pitch and range in espeak units, rate as a log factor, level in dB; the
# word gap (10 ms units) moves by one step either way with probability `WORDGAP_JITTER` each.
JITTER = {"pitch": 3.0, "range": 5.0, "rate": 0.05, "level_db": 1.0}
WORDGAP_JITTER = 0.15
# Shares of an English speaker's utterances; other languages speak sentences only.
TASK_SHARES = {"keyword": 0.35, "intent": 0.25}
MIN_SPEAKERS = 20
# The speaker count grows with the requested hours, sub-linearly (more speech per speaker as
# corpora grow): SPEAKERS_AT_1H * hours ** SPEAKER_GROWTH (160 at 1 h, 400 at 5 h, 590 at
# 10 h), at most one speaker per MIN_SECONDS_PER_SPEAKER of audio and at most the catalogue.
SPEAKERS_AT_1H = 160
SPEAKER_GROWTH = 0.57
MIN_SECONDS_PER_SPEAKER = 20.0
MIN_SEEN_UTTERANCES = 10  # two train utterances per style, one valid, one test
MIN_UNSEEN_UTTERANCES = 6  # every style, and several per speaker for verification trials

# ---- the evaluation corpus
# espeak voice variants (espeak-ng-data/voices/!v) of the evaluation speakers, none of them in
# `VARIANTS`: speech-like ones only (no whisper, croak, robot, echo or Klatt-synthesis
# variants), and none that clips at the loud style's volume. Female variants are spread out
# so that any prefix mixes both.
EVAL_VARIANTS = ("m8", "Andrea", "Alex", "Annie", "Andy", "anika", "Denis", "belinda", "Diogo",
                 "linda", "Henrique", "steph", "Hugo", "steph2", "Mario", "shelby", "Michael",
                 "aunty", "Mike", "grandma", "boris", "Nguyen", "marcelo", "max", "michel",
                 "miguel", "quincy", "rob", "robert", "travis", "victor", "norbert", "pablo",
                 "ian", "kaukovalta", "Lee")
EVAL_SPEAKERS_PER_VOICE = {**{v: 7 for v in ENGLISH_VOICES}, **{v: 2 for v in OTHER_VOICES}}
# The first speakers of each voice are "seen" (train/valid/test), the others held out.
EVAL_SEEN_PER_VOICE = {**{v: 5 for v in ENGLISH_VOICES}, **{v: 1 for v in OTHER_VOICES}}
# Per split: keyword clips per class (12 classes with `_silence_` and `_unknown_`), utterances
# per intent (52 intents), English sentences, sentences per seen speaker of another language.
EVAL_SIZES = {
    "train": (100, 24, 1000, 16),
    "valid": (25, 6, 150, 4),
    "test": (50, 12, 300, 8),
}
# Per held-out speaker (English ones: half sentences, half intents): 24 speakers x 22 give
# 24 * C(22, 2) = 5544 same-speaker pairs, enough for 10,000 balanced verification trials.
EVAL_UNSEEN_UTTERANCES = 22
EVAL_ABX_SPEAKERS = 24  # seen English speakers, 3-4 per accent
EVAL_ABX_SENTENCES = 12  # per ABX speaker
EVAL_SENTENCE_SECONDS = 1.3  # median length of a sentence's speech (4-5 English words)
EVAL_SENTENCE_SPREAD = 0.35  # standard deviation of its logarithm
EVAL_PURPOSE = (
    "Evaluation corpus: speakers disjoint from the pretraining corpus (other espeak voice "
    "variants and base prosody); train/valid/test for probes over seen evaluation speakers, "
    "test_unseen (held-out speakers) for verification, abx_words and abx_sentences for "
    "across-speaker ABX discrimination.")


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak voice + variant with base prosody.

    `pitch`, `rate` and `range` are espeak settings (pitch and range 0-99, rate in words per
    minute). Pretraining speakers also have a base `wordgap` (10 ms units), a level offset
    `level_db` and the median F0 their pitch was chosen for, `f0` (Hz); evaluation speakers
    leave them None.
    """

    id: str
    voice: str
    variant: str
    pitch: int
    rate: int
    range: int
    wordgap: int | None = None
    level_db: float | None = None
    f0: float | None = None

    @property
    def language(self) -> str:
        return self.voice

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "voice": self.voice, "variant": self.variant,
               "language": self.language, "pitch": self.pitch, "rate": self.rate,
               "range": self.range}
        for key in ("wordgap", "level_db", "f0"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _interleave(per_voice: dict[str, int]) -> list[tuple[str, int]]:
    """`(voice, rank within the voice)` in rounds over `EVAL_VOICES`, so that any prefix spans
    every voice."""
    return [(voice, r) for r in range(max(per_voice.values())) for voice in EVAL_VOICES
            if r < per_voice[voice]]


@functools.lru_cache(maxsize=None)
def variant_f0(variant: str) -> float:
    """The centre of a variant's F0 range in Hz (its file's `pitch` line; espeak's default
    80-118 Hz without one): about its median F0 at espeak pitch 50."""
    from ssl_jax.data import espeak

    low, high = espeak.variant_pitch(variant)
    return (low + high) / 2.0


def _weighted_rounds(weights: dict[str, int], capacity: int) -> list[tuple[str, int]]:
    """`(voice, rank within the voice)`: smooth weighted round robin over `weights` (in their
    order), each voice taken `capacity` times, so that any prefix holds every voice in
    proportion to its weight."""
    credit = dict.fromkeys(weights, 0)
    taken = dict.fromkeys(weights, 0)
    out = []
    while True:
        active = [v for v in weights if taken[v] < capacity]
        if not active:
            return out
        for v in active:
            credit[v] += weights[v]
        pick = max(active, key=lambda v: credit[v])  # the first of equals
        credit[pick] -= sum(weights[v] for v in active)
        out.append((pick, taken[pick]))
        taken[pick] += 1


def _assign_variants(order: list[tuple[str, int]]) -> list[str]:
    """The variant of each catalogue position in `order` (`(voice, rank)` pairs): every
    variant once per voice, female-F0 ones at two of every five positions while the voice
    has any left, each voice's variants rotated by its index so that voices start on
    different ones."""
    female = [v for v in VARIANTS if variant_f0(v) >= FEMALE_F0]
    male = [v for v in VARIANTS if variant_f0(v) < FEMALE_F0]
    left = {voice: ([female[(3 * i + j) % len(female)] for j in range(len(female))],
                    [male[(11 * i + j) % len(male)] for j in range(len(male))])
            for i, voice in enumerate(ALL_VOICES)}
    out = []
    for k, (voice, _) in enumerate(order):
        fem, mal = left[voice]
        out.append((fem if (fem and k % 5 in (0, 2)) or not mal else mal).pop(0))
    return out


def _pitch_for(f0: float, variant: str) -> int:
    """espeak's pitch setting (0-99) at which `variant` speaks closest to median F0 `f0` (Hz),
    interpolating `PITCH_RATIO` in log ratio."""
    steps, ratios = zip(*PITCH_RATIO)
    return int(round(float(np.interp(math.log(f0 / variant_f0(variant)), np.log(ratios), steps))))


def _pitch_f0(pitch: int, variant: str) -> float:
    """The median F0 (Hz) of `variant` at espeak pitch setting `pitch` (`PITCH_RATIO`)."""
    steps, ratios = zip(*PITCH_RATIO)
    return variant_f0(variant) * math.exp(float(np.interp(pitch, steps, np.log(ratios))))


@functools.lru_cache(maxsize=None)
def _full_catalogue() -> tuple[Speaker, ...]:
    order = _weighted_rounds(VOICE_WEIGHT, len(VARIANTS))
    out = []
    for k, ((voice, _), variant) in enumerate(zip(order, _assign_variants(order))):
        rng = np.random.default_rng([CATALOGUE_SEED, k])
        median, spread, low, high = F0_TARGETS["female" if variant_f0(variant) >= FEMALE_F0
                                                else "male"]
        pitch = _pitch_for(float(np.clip(median * math.exp(rng.normal(0.0, spread)), low, high)),
                           variant)
        rate = int(round(math.exp(rng.uniform(math.log(135.0), math.log(215.0)))))
        spread_range = int(rng.integers(20, 81))
        wordgap = 0 if rng.random() < 0.6 else int(rng.integers(1, 4))
        level = round(float(rng.uniform(-3.0, 3.0)), 1)
        out.append(Speaker(id=f"spk{k:04d}", voice=voice, variant=variant, pitch=pitch,
                           rate=rate, range=spread_range, wordgap=wordgap, level_db=level,
                           f0=round(_pitch_f0(pitch, variant), 1)))
    return tuple(out)


def speaker_catalogue(voices: tuple[str, ...] | None = None) -> list[Speaker]:
    """All speakers of the pretraining corpus: one per (voice, variant) of `ALL_VOICES` x
    `VARIANTS`, interleaved so that any prefix spans every voice (English accents twice as
    often as other languages, `VOICE_WEIGHT`) and many variants (two in five with a female F0
    range while the voice has any left).

    Each speaker's base prosody is drawn once from `CATALOGUE_SEED` and its index: a median
    F0 (male-range variants around 115 Hz, female-range ones around 205 Hz, `F0_TARGETS`)
    turned into espeak's pitch setting for its variant (`f0` is the F0 that setting gives,
    which differs where the variant cannot reach the target), a pitch range 20-80, a rate of 135-215
    words per minute (log-uniform), a word gap (none for 60%, else 10-30 ms) and a level
    offset of +-3 dB. The catalogue does not depend on the corpus seed, so speaker ids are
    stable; `voices` keeps the speakers of those voices (with their ids).
    """
    if voices is None:
        voices = ALL_VOICES
    unknown = [v for v in voices if v not in VOICE_LANG]
    if unknown:
        raise ValueError(f"unknown voice(s) {unknown}; the corpus knows {list(ALL_VOICES)}")
    return [s for s in _full_catalogue() if s.voice in voices]


def speaker_count(hours: float, available: int) -> int:
    """How many speakers a pretraining corpus of `hours` has, from a catalogue of `available`:
    `SPEAKERS_AT_1H * hours ** SPEAKER_GROWTH`, at most one per `MIN_SECONDS_PER_SPEAKER` of
    audio, at least `MIN_SPEAKERS`, at most `available`."""
    wanted = min(SPEAKERS_AT_1H * hours ** SPEAKER_GROWTH, hours * 3600.0 / MIN_SECONDS_PER_SPEAKER)
    return int(np.clip(round(wanted), min(MIN_SPEAKERS, available), available))


def catalogue_summary(voices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """How the pretraining speakers are made (for `corpus.json`): voices, variants, the size
    of the catalogue, and the rules of base prosody, jitter and levels."""
    catalogue = speaker_catalogue(voices)
    return {
        "speakers_available": len(catalogue),
        "voices": sorted({s.voice for s in catalogue}),
        "variants": list(VARIANTS),
        "klatt_variants": list(KLATT_VARIANTS),
        "female_f0_variants": [v for v in VARIANTS if variant_f0(v) >= FEMALE_F0],
        "excluded_variants": dict(EXCLUDED_VARIANTS),
        "speaker_count": {"speakers_at_1h": SPEAKERS_AT_1H, "growth": SPEAKER_GROWTH,
                          "min_seconds_per_speaker": MIN_SECONDS_PER_SPEAKER,
                          "min_speakers": MIN_SPEAKERS},
        "f0_targets": {k: dict(zip(("median_hz", "log_spread", "min_hz", "max_hz"), v))
                       for k, v in F0_TARGETS.items()},
        "jitter": {**JITTER, "wordgap_step_probability": WORDGAP_JITTER},
        "neutral_level_dbfs": NEUTRAL_LEVEL_DB,
        "peak_dbfs": PEAK_DBFS,
        "snr_db": list(SNR_DB),
        "level_rule": ("active speech level = mean power of the 20 ms frames within 30 dB of "
                       "the loudest (ITU-T P.56-like), set by a gain on the 16 kHz audio; "
                       "peaks kept under peak_dbfs"),
    }


def eval_speaker_catalogue() -> tuple[list[Speaker], list[Speaker]]:
    """The evaluation corpus's speakers as (seen, held out), each interleaved over voices.

    Ids `ev000`...; voices `EVAL_VOICES`; variants from `EVAL_VARIANTS` (none used by
    `speaker_catalogue`) and base pitch 25-75, rate 140-210 words/minute, pitch range 25-85.
    """
    seen, unseen = [], []
    for k, (voice, r) in enumerate(_interleave(EVAL_SPEAKERS_PER_VOICE)):
        spk = Speaker(id=f"ev{k:03d}", voice=voice, variant=EVAL_VARIANTS[k % len(EVAL_VARIANTS)],
                      pitch=25 + (k * 29 + 11) % 51, rate=140 + (k * 31 + 5) % 71,
                      range=25 + (k * 43 + 7) % 61)
        (seen if r < EVAL_SEEN_PER_VOICE[voice] else unseen).append(spk)
    return seen, unseen


def style_prosody(spk: Speaker, style: str):
    """espeak settings of `spk` speaking in `style` (the evaluation corpus: no jitter, the
    style's espeak volume)."""
    from ssl_jax.data.espeak import Prosody

    factor, dpitch, drange, volume = STYLE_PROSODY[style]
    return Prosody(rate=int(round(spk.rate * factor)), pitch=int(np.clip(spk.pitch + dpitch, 0, 99)),
                   range=int(np.clip(spk.range + drange, 0, 99)), volume=volume)


def utterance_prosody(rng: np.random.Generator, spk: Speaker, style: str):
    """One pretraining utterance's espeak settings and target level: `spk`'s base settings,
    moved by `style` (`STYLE_PROSODY`, `STYLE_LEVEL_DB`) and jittered (`JITTER`,
    `WORDGAP_JITTER`), so that a speaker's utterances vary a little as a person's do.

    Returns:
        (espeak Prosody at `RENDER_VOLUME`, target active speech level in dBFS).
    """
    from ssl_jax.data.espeak import Prosody

    if spk.wordgap is None or spk.level_db is None:
        raise ValueError(f"speaker {spk.id} is not a pretraining speaker (no wordgap/level_db)")
    factor, dpitch, drange, _ = STYLE_PROSODY[style]
    j = np.clip(rng.normal(0.0, 1.0, size=4), -2.0, 2.0)
    step = int(rng.choice(3, p=[WORDGAP_JITTER, 1.0 - 2 * WORDGAP_JITTER, WORDGAP_JITTER])) - 1
    prosody = Prosody(
        rate=int(np.clip(round(spk.rate * factor * math.exp(JITTER["rate"] * j[0])), 80, 450)),
        pitch=int(np.clip(round(spk.pitch + dpitch + JITTER["pitch"] * j[1]), 0, 99)),
        range=int(np.clip(round(spk.range + drange + JITTER["range"] * j[2]), 0, 99)),
        volume=RENDER_VOLUME, wordgap=max(0, spk.wordgap + step))
    level = NEUTRAL_LEVEL_DB + spk.level_db + STYLE_LEVEL_DB[style] + JITTER["level_db"] * j[3]
    return prosody, round(float(level), 2)


# ----------------------------------------------------------------------------- planning


def _spec(rng: np.random.Generator, spk: Speaker, task: str, style: str, text: str,
          keyword: str | None = None, intent: dict[str, str] | None = None,
          prosody=None, level: float | None = None) -> dict[str, Any]:
    """One planned utterance of `spk` (its noise seed drawn last): espeak `prosody` (default
    `style_prosody`) and, for the pretraining corpus, the target speech `level` in dBFS
    (None: espeak's volume sets the level)."""
    return {"task": task, "style": style, "speaker": spk.id, "language": spk.language,
            "voice": f"{spk.voice}+{spk.variant}", "text": text, "keyword": keyword,
            "intent": intent, "prosody": style_prosody(spk, style) if prosody is None else prosody,
            "level": level, "seed": int(rng.integers(2**31))}


def _silence_spec(rng: np.random.Generator, split: str, k: int) -> dict[str, Any]:
    """A `_silence_` keyword clip: noise only, no speaker."""
    return {"id": f"silence-{k:04d}", "split": split, "task": "keyword", "style": "neutral",
            "speaker": SILENCE_SPEAKER, "language": "none", "voice": None, "text": "",
            "keyword": sentences.SILENCE, "intent": None, "prosody": None, "level": None,
            "seed": int(rng.integers(2**31))}


def _sentence_text(rng: np.random.Generator, lang: str, rate: int, median: float,
                   spread: float = 0.45) -> str:
    """A sentence of wordfreq language `lang` lasting about `median` seconds (log-normal
    `spread`, 1.2-12 s) at espeak `rate`."""
    seconds = float(np.clip(median * math.exp(rng.normal(0.0, spread)), 1.2, 12.0))
    # espeak's rate is in words per minute; words of other languages are longer.
    wps = rate / 60.0 * (1.0 if lang == "en" else 0.75)
    return sentences.sentence(rng, lang, max(1, int(round(seconds * wps))))


def _utterance(rng: np.random.Generator, spk: Speaker, task: str, style: str,
               sent_median: float) -> dict[str, Any]:
    """A pretraining-corpus utterance with freely drawn content and jittered prosody."""
    prosody, level = utterance_prosody(rng, spk, style)
    keyword = intent = None
    if task == "sentence":
        text = _sentence_text(rng, VOICE_LANG[spk.voice], prosody.rate, sent_median)
    elif task == "keyword":
        keyword, text = sentences.keyword(rng)
    else:
        text, intent = sentences.intent(rng)
    return _spec(rng, spk, task, style, text, keyword, intent, prosody=prosody, level=level)


def _style_cycle(rng: np.random.Generator):
    """Styles for one speaker: they cycle within each split (from a random start), so every
    split sees every style of a speaker that has four utterances there."""
    offset = int(rng.integers(len(STYLES)))
    counters: collections.Counter = collections.Counter()

    def next_style(split: str) -> str:
        counters[split] += 1
        return STYLES[(counters[split] - 1 + offset) % len(STYLES)]

    return next_style


def _in_write_order(rng: np.random.Generator, by_split: dict[str, list[dict]],
                    splits: tuple[str, ...]) -> list[dict]:
    """All specs, split after split, each split in a random order."""
    specs = []
    for split in splits:
        items = by_split[split]
        specs.extend(items[i] for i in rng.permutation(len(items)))
    return specs


def _plan(hours: float, seed: int, voices: tuple[str, ...] | None) -> tuple[list[dict], list[Speaker], list[Speaker]]:
    """Every utterance of the pretraining corpus as a spec dict, in write order; (specs, seen,
    unseen)."""
    catalogue = speaker_catalogue(voices)
    target = hours * 3600.0
    num = speaker_count(hours, len(catalogue))
    chosen = catalogue[:num]
    num_unseen = max(2, round(num / 8)) if num >= 6 else 0
    seen, unseen = chosen[:num - num_unseen], chosen[num - num_unseen:]
    budget = target / num
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    keyword_clips = {s: 0 for s in SPLITS}

    for spk in chosen:
        is_unseen = spk in unseen
        english = VOICE_LANG[spk.voice] == "en"
        floor = MIN_UNSEEN_UTTERANCES if is_unseen else MIN_SEEN_UTTERANCES
        n = max(floor, int(round(budget / 3.0)))
        n_kw = int(round(n * TASK_SHARES["keyword"])) if english else 0
        n_int = int(round(n * TASK_SHARES["intent"])) if english else 0
        n_sent = n - n_kw - n_int
        # Sentence length follows the budget so that small corpora keep many speakers.
        left = budget - n_kw * 1.0 - n_int * 2.0
        sent_median = float(np.clip(left / max(n_sent, 1), 1.5, 4.5))
        tasks = ["sentence"] * n_sent + ["keyword"] * n_kw + ["intent"] * n_int
        rng.shuffle(tasks)
        if is_unseen:
            splits = ["test_unseen"] * n
        else:
            n_valid = n_test = max(1, int(round(0.1 * n)))
            splits = ["train"] * (n - n_valid - n_test) + ["valid"] * n_valid + ["test"] * n_test
        next_style = _style_cycle(rng)
        for j, (task, split) in enumerate(zip(tasks, splits)):
            spec = _utterance(rng, spk, task, next_style(split), sent_median)
            spec.update(id=f"{spk.id}-{j:04d}", split=split)
            by_split[split].append(spec)
            keyword_clips[split] += task == "keyword"

    # `_silence_` as one of the twelve keyword classes, as in Speech Commands.
    k = 0
    for split in SPLITS[:3]:
        for _ in range(int(round(keyword_clips[split] / 11))):
            by_split[split].append(_silence_spec(rng, split, k))
            k += 1
    return _in_write_order(rng, by_split, SPLITS), seen, unseen


def _check_scale(scale: float) -> float:
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 < scale <= 4:
        raise ValueError(f"scale must be a number in (0, 4], got {scale!r}")
    return float(scale)


def _eval_plan(seed: int, scale: float = 1.0
               ) -> tuple[list[dict], list[Speaker], list[Speaker], list[Speaker]]:
    """Every utterance of the evaluation corpus as a spec dict, in write order.

    Args:
        seed: the plan's seed.
        scale: multiplies every count (items per split and task, held-out speakers and their
            utterances, ABX speakers, words and sentences); 1 is the evaluation corpus, small
            values give tiny corpora for tests (at least one item of each kind).
    Returns:
        (specs, seen speakers, held-out speakers, ABX speakers).
    """
    scale = _check_scale(scale)

    def count(n: float, least: int = 1) -> int:
        return max(least, int(round(n * scale)))

    seen, unseen_all = eval_speaker_catalogue()
    seen_en = [s for s in seen if VOICE_LANG[s.voice] == "en"]
    seen_other = [s for s in seen if VOICE_LANG[s.voice] != "en"]
    # Held-out speakers alternate English and other languages, so any prefix mixes them.
    held_en = [s for s in unseen_all if VOICE_LANG[s.voice] == "en"]
    held_other = [s for s in unseen_all if VOICE_LANG[s.voice] != "en"]
    mixed = [s for pair in zip(held_en, held_other) for s in pair]
    mixed += held_en[len(held_other):] + held_other[len(held_en):]
    unseen = mixed[:min(len(mixed), count(len(mixed), 2))]
    # Floors keep small test corpora able to form ABX triplets in both dev and test halves.
    abx_speakers = seen_en[:min(len(seen_en), count(EVAL_ABX_SPEAKERS, 3))]

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    by_split: dict[str, list[dict]] = {s: [] for s in EVAL_SPLITS}
    styles = {s.id: _style_cycle(rng) for s in seen + unseen}
    numbering: collections.Counter = collections.Counter()

    def add(spk: Speaker, split: str, task: str, style: str, text: str,
            keyword: str | None = None, intent: dict[str, str] | None = None) -> None:
        spec = _spec(rng, spk, task, style, text, keyword, intent)
        spec.update(id=f"{spk.id}-{numbering[spk.id]:04d}", split=split)
        numbering[spk.id] += 1
        by_split[split].append(spec)

    def sentence(spk: Speaker, style: str) -> str:
        return _sentence_text(rng, VOICE_LANG[spk.voice], style_prosody(spk, style).rate,
                              EVAL_SENTENCE_SECONDS, EVAL_SENTENCE_SPREAD)

    keyword_labels = sentences.KEYWORDS + (sentences.UNKNOWN,)
    all_intents = sentences.intents()
    silence = 0
    for split, (per_class, per_intent, n_english, per_other) in EVAL_SIZES.items():
        # Balanced classes: every keyword label and every intent equally often, spread over
        # the English speakers in a random order.
        n_kw = count(per_class * len(keyword_labels))
        n_int = count(per_intent * len(all_intents))
        items = ([("keyword", keyword_labels[i % len(keyword_labels)]) for i in range(n_kw)]
                 + [("intent", all_intents[i % len(all_intents)]) for i in range(n_int)]
                 + [("sentence", None)] * count(n_english))
        for j, i in enumerate(rng.permutation(len(items))):
            task, label = items[i]
            spk = seen_en[j % len(seen_en)]
            style = styles[spk.id](split)
            if task == "keyword":
                add(spk, split, task, style, sentences.keyword_word(rng, label), keyword=label)
            elif task == "intent":
                add(spk, split, task, style, sentences.intent_text(rng, label), intent=label)
            else:
                add(spk, split, task, style, sentence(spk, style))
        for j in range(count(per_other * len(seen_other))):
            spk = seen_other[j % len(seen_other)]
            style = styles[spk.id](split)
            add(spk, split, "sentence", style, sentence(spk, style))
        for _ in range(count(per_class)):
            by_split[split].append(_silence_spec(rng, split, silence))
            silence += 1

    per_speaker = count(EVAL_UNSEEN_UTTERANCES, 2)
    for spk in unseen:
        english = VOICE_LANG[spk.voice] == "en"
        for k in range(per_speaker):
            style = styles[spk.id]("test_unseen")
            if english and k % 2:
                text, slots = sentences.intent(rng)
                add(spk, "test_unseen", "intent", style, text, intent=slots)
            else:
                add(spk, "test_unseen", "sentence", style, sentence(spk, style))

    # ABX: every word once per speaker; running speech of the same words. The speakers'
    # base prosody (neutral style) leaves the speaker as the only nuisance.
    words = sentences.ABX_WORDS[:min(len(sentences.ABX_WORDS), count(len(sentences.ABX_WORDS), 8))]
    for spk in abx_speakers:
        for word in words:
            add(spk, "abx_words", "word", "neutral", word)
        for _ in range(count(EVAL_ABX_SENTENCES, 6)):
            add(spk, "abx_sentences", "abx_sentence", "neutral",
                sentences.abx_sentence(rng, int(rng.integers(4, 7))))
    return _in_write_order(rng, by_split, EVAL_SPLITS), seen, unseen, abx_speakers


# ----------------------------------------------------------------------------- rendering


def _noise(rng: np.random.Generator, n: int, dbfs: float) -> np.ndarray:
    """Low-level noise, `[n]`: white plus pink (1/f power) noise, at `dbfs` RMS."""
    white = rng.standard_normal(n)
    size = 1 << max(1, int(n - 1).bit_length())  # a power of two keeps the FFT fast
    spec = np.fft.rfft(rng.standard_normal(size))
    spec /= np.sqrt(np.maximum(np.arange(spec.shape[0]), 1.0))
    pink = np.fft.irfft(spec, size)[:n]
    x = white + pink / (pink.std() + 1e-9)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12) * 10 ** (dbfs / 20)).astype(np.float32)


def _speech_bounds(x: np.ndarray, level: float = 1e-3) -> tuple[int, int]:
    """`[start, end)` of a spoken word without the silence (espeak writes exact zeros) around
    it, `x`: `[samples]`; `(0, 0)` when nothing is louder than `level`."""
    loud = np.nonzero(np.abs(x) > level)[0]
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, 0)


def active_level_db(x: np.ndarray, frame: int = 320, window_db: float = 30.0) -> float:
    """Active speech level of `x` (`[samples]`) in dBFS: the mean power of its 20 ms frames
    within `window_db` of the loudest one, a simple form of ITU-T P.56's active level (pauses
    do not lower it). -inf for silence."""
    n = x.shape[0] // frame
    if n == 0:
        power = np.array([np.mean(np.square(x, dtype=np.float64))]) if x.size else np.zeros(1)
    else:
        power = np.mean(np.square(x[:n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    top = power.max()
    if top <= 0:
        return -math.inf
    return float(10.0 * np.log10(power[power >= top * 10 ** (-window_db / 10)].mean()))


def _speak(text: str, voice: str, prosody, seed: int, level: float | None = None):
    """16 kHz float32 audio `[samples]`, phones and their alignment in samples of the audio.

    With `level` (dBFS), espeak renders below its output limiter (`RENDER_PEAK`), the audio
    is scaled to that active speech level, its peak kept under `PEAK_DBFS`, and the alignment
    takes `ALIGN_SILENCE` and the sound's onset into account (`ssl_jax.data.espeak.align`).
    """
    import soxr

    from ssl_jax.data import espeak

    silence = 0.0 if level is None else ALIGN_SILENCE
    r = espeak.render_aligned(text, voice, prosody, seed=seed, silence=silence,
                              onset=level is not None)
    if level is not None and r.audio.size:
        peak = float(np.abs(r.audio.astype(np.int32)).max()) / 32768.0
        if peak > RENDER_PEAK:
            quieter = replace(prosody, volume=max(1, int(prosody.volume * 0.5 / peak)))
            r = espeak.render_aligned(text, voice, quieter, seed=seed, silence=silence,
                                      onset=True)
    audio = np.asarray(soxr.resample(r.audio.astype(np.float32) / 32768.0, r.sample_rate,
                                     SAMPLE_RATE, quality="HQ"), np.float32)
    if level is not None and audio.size:
        speech = active_level_db(audio)
        if math.isfinite(speech):
            gain = 10 ** ((level - speech) / 20)
            gain = min(gain, 10 ** (PEAK_DBFS / 20) / float(np.abs(audio).max()))
            audio = (audio * gain).astype(np.float32)
    return audio, r.phones, r.alignment.mapped(SAMPLE_RATE / r.sample_rate, 0, audio.shape[0])


def render_utterance(spec: dict[str, Any]) -> dict[str, Any]:
    """Synthesises one planned utterance.

    Layouts by task: `keyword` clips last at least 1 s, the word trimmed of silence and placed
    at a random offset; `word` (ABX) clips are the trimmed word with 50-150 ms of silence on
    each side; other speech gets 50-250 ms of silence on each side and at least
    `MIN_SECONDS`. Low-level noise is added to every clip: at -72 to -58 dBFS, or with a
    target `level` (pretraining), at `SNR_DB` below it.

    Returns:
        {"audio": float32 [samples] at 16 kHz, "text", "phonemes", "alignment" (phones and
        words with `[start, end)` sample positions in "audio"), "seconds"}, where "seconds"
        is the CPU time spent (so the real-time factor per core does not depend on how busy
        the machine is).
    """
    start = time.process_time()
    rng = np.random.default_rng(spec["seed"])
    text, phones = spec["text"], []
    alignment = {"phones": [], "words": []}
    level = spec.get("level")
    if level is None:
        floor_db = float(rng.uniform(-72.0, -58.0))
    else:
        floor_db = level - float(rng.uniform(*SNR_DB))
    if spec["voice"] is None:  # `_silence_`: noise only
        audio = _noise(rng, SAMPLE_RATE, float(rng.uniform(-60.0, -38.0)))
    else:
        words = text.split()
        while True:
            audio, phones, aligned = _speak(text, spec["voice"], spec["prosody"], spec["seed"],
                                            level)
            if audio.shape[0] <= (MAX_SECONDS - 0.6) * SAMPLE_RATE or len(words) < 2:
                break
            words = words[:max(1, (2 * len(words)) // 3)]  # too long: drop the last third
            text = " ".join(words).rstrip(".") + "."
        if spec["task"] in ("keyword", "word"):
            lo, hi = _speech_bounds(audio)
            if aligned.phones:  # keep every phone whole, however quiet
                lo, hi = min(lo, aligned.phones[0][1]), max(hi, aligned.phones[-1][2])
            if spec["task"] == "keyword":
                length = max(SAMPLE_RATE, hi - lo + SAMPLE_RATE // 10)
                offset = int(rng.integers(0, length - (hi - lo) + 1))
            else:
                margins = rng.integers(SAMPLE_RATE // 20, 3 * SAMPLE_RATE // 20, size=2)
                length, offset = hi - lo + int(margins.sum()), int(margins[0])
            clip = np.zeros(length, np.float32)
            clip[offset:offset + hi - lo] = audio[lo:hi]
            audio, shift = clip, offset - lo
        else:
            pad = rng.integers(SAMPLE_RATE // 20, SAMPLE_RATE // 4, size=2)
            audio = np.concatenate([np.zeros(pad[0], np.float32), audio, np.zeros(pad[1], np.float32)])
            if audio.shape[0] < MIN_SECONDS * SAMPLE_RATE:
                extra = int(MIN_SECONDS * SAMPLE_RATE) - audio.shape[0]
                audio = np.concatenate([audio, np.zeros(extra, np.float32)])
            shift = int(pad[0])
        alignment = aligned.mapped(1.0, shift, audio.shape[0]).as_dict()
        audio = audio + _noise(rng, audio.shape[0], floor_db)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    return {"audio": audio, "text": text, "phonemes": phones, "alignment": alignment,
            "seconds": time.process_time() - start}


# ----------------------------------------------------------------------------- building


def _config(hours: float, seed: int, voices: tuple[str, ...] | None) -> dict[str, Any]:
    return {"format": FORMAT, "hours_requested": hours, "seed": seed,
            "voices_requested": list(voices) if voices else None}


def _eval_config(seed: int, scale: float) -> dict[str, Any]:
    return {"format": EVAL_FORMAT, "corpus": "evaluation", "seed": seed, "scale": scale}


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, float, np.integer)) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_args(hours: float, seed: int) -> tuple[float, int]:
    if not isinstance(hours, (int, float)) or not math.isfinite(hours) or hours <= 0:
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    if hours > 1000:
        raise ValueError(f"hours={hours} is too large for the embedded corpus (max 1000)")
    return float(hours), _check_seed(seed)


def _existing(out_dir: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The corpus already in `out_dir` if it was built from `config`; None if `out_dir` is
    free. Raises ValueError when it holds something else."""
    corpus_json = os.path.join(out_dir, "corpus.json")
    if os.path.exists(corpus_json):
        with open(corpus_json) as f:
            existing = json.load(f)
        if all(existing.get(k) == v for k, v in config.items()):
            return existing
        theirs = {k: existing.get(k) for k in config}
        raise ValueError(f"{out_dir} already holds a different corpus ({theirs}); asked for "
                         f"{config}: choose another folder or delete it")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir} exists and is not a folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f"{out_dir} is not empty and holds no corpus.json; refusing to write into it")
    return None


def _build(out_dir: str, config: dict[str, Any], specs: list[dict], splits: tuple[str, ...],
           summarise: Callable[[list[dict], dict[str, Any]], dict[str, Any]],
           num_workers: int | None, progress: bool) -> dict[str, Any]:
    """Renders `specs` into `out_dir` (in a temporary sibling folder, then renamed) and writes
    `corpus.json`: `config`, then what `summarise(specs, render summary)` returns."""
    from ssl_jax.data import espeak

    for voice in sorted({s["voice"] for s in specs if s["voice"]}):
        espeak.check_voice(voice)  # a clear error before any work starts
    workers = max(1, int(num_workers or os.cpu_count() or 1))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        summary = _render_all(tmp, specs, splits, workers, progress)
        corpus = {**config, **summarise(specs, summary)}
        corpus["build"] = _build_figures(summary, workers)
        with open(os.path.join(tmp, "corpus.json"), "w") as f:
            json.dump(corpus, f, indent=1, ensure_ascii=False)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty (checked by `_existing`)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished the same folder first.
            done = _existing(out_dir, config)
            if done is not None:
                return done
            raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return corpus


def build_corpus(out_dir: str, hours: float = 1.0, seed: int = 0, *,
                 num_workers: int | None = None, voices: tuple[str, ...] | list[str] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Builds the pretraining corpus into `out_dir` (built in a temporary sibling folder, then
    renamed).

    Args:
        out_dir: destination; must not exist, be empty, or already hold this same corpus
            (then nothing is rebuilt).
        hours: target hours of audio. Requests below about 0.5 h come out larger (0.2 h gives
            about 0.35 h): every seen speaker keeps at least two train utterances per style
            plus valid and test ones, and at least 65 speakers from 0.2 h on. `corpus.json`
            reports the hours actually written.
        seed: the plan's seed; the same seed gives byte-identical shards and manifests.
        num_workers: processes rendering audio (default `os.cpu_count()`); the output does not
            depend on it.
        voices: restrict to these espeak voices (default all of `ENGLISH_VOICES + OTHER_VOICES`).
        progress: print progress to stderr.
    Returns:
        the contents written to `out_dir/corpus.json`.
    """
    hours, seed = _check_args(hours, seed)
    voices = tuple(voices) if voices else None
    config = _config(hours, seed, voices)
    out_dir = os.path.abspath(out_dir)
    done = _existing(out_dir, config)
    if done is not None:
        return done
    specs, seen, unseen = _plan(hours, seed, voices)

    def summarise(specs: list[dict], summary: dict[str, Any]) -> dict[str, Any]:
        speakers = [dict(s.as_dict(), split="seen") for s in seen] + \
                   [dict(s.as_dict(), split="unseen") for s in unseen]
        return {"corpus": "pretraining",
                **_summarise(specs, summary, SPLITS, speakers, pretraining=True),
                "catalogue": catalogue_summary(voices)}

    return _build(out_dir, config, specs, SPLITS, summarise, num_workers, progress)


def build_eval_corpus(out_dir: str, seed: int = 0, *, scale: float = 1.0,
                      num_workers: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Builds the evaluation corpus into `out_dir` (see the module docstring and `_eval_plan`).

    Splits: `train`, `valid`, `test` (seen evaluation speakers: balanced keyword classes and
    intents, English sentences, sentences of other languages, `_silence_` clips),
    `test_unseen` (held-out speakers, for verification), `abx_words` (task `word`) and
    `abx_sentences` (task `abx_sentence`).

    Args:
        out_dir: destination; must not exist, be empty, or already hold this same corpus.
        seed: the plan's seed; the same seed gives byte-identical shards and manifests.
        scale: multiplies every count; 1 is the evaluation corpus (about 3.3 hours), tests
            use tiny values such as 0.02.
        num_workers: processes rendering audio (default `os.cpu_count()`); the output does not
            depend on it.
        progress: print progress to stderr.
    Returns:
        the contents written to `out_dir/corpus.json`.
    """
    seed, scale = _check_seed(seed), _check_scale(scale)
    config = _eval_config(seed, scale)
    out_dir = os.path.abspath(out_dir)
    done = _existing(out_dir, config)
    if done is not None:
        return done
    specs, seen, unseen, abx = _eval_plan(seed, scale)
    abx_ids = {s.id for s in abx}
    spoken = {s["text"] for s in specs if s["split"] == "abx_words"}

    def summarise(specs: list[dict], summary: dict[str, Any]) -> dict[str, Any]:
        speakers = [dict(s.as_dict(), split="seen", abx=s.id in abx_ids) for s in seen] + \
                   [dict(s.as_dict(), split="unseen", abx=False) for s in unseen]
        return {
            "purpose": EVAL_PURPOSE,
            **_summarise(specs, summary, EVAL_SPLITS, speakers),
            "abx_words": [w for w in sentences.ABX_WORDS if w in spoken],
            "abx_function_words": list(sentences.FUNCTION_WORDS),
            "abx_triphones": triphone_triplets(
                [s for s in specs if s["split"] == "abx_sentences"]),
        }

    return _build(out_dir, config, specs, EVAL_SPLITS, summarise, num_workers, progress)


def build_eval_abx_words(out_dir: str, seed: int = 0, *, scale: float = 1.0,
                         num_workers: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Builds only the `abx_words` split of the evaluation corpus into `out_dir`: the same
    utterances, records and manifest lines as that split of `build_eval_corpus(seed=seed,
    scale=scale)` (about 1,300 one-word clips at scale 1), for a quick in-training probe.

    Args: as `build_eval_corpus`.
    Returns:
        the contents written to `out_dir/corpus.json`.
    """
    seed, scale = _check_seed(seed), _check_scale(scale)
    config = {**_eval_config(seed, scale), "corpus": "evaluation abx_words"}
    out_dir = os.path.abspath(out_dir)
    done = _existing(out_dir, config)
    if done is not None:
        return done
    specs, _, _, abx = _eval_plan(seed, scale)
    specs = [s for s in specs if s["split"] == "abx_words"]

    def summarise(specs: list[dict], summary: dict[str, Any]) -> dict[str, Any]:
        speakers = [dict(s.as_dict(), split="seen", abx=True) for s in abx]
        spoken = {s["text"] for s in specs}
        return {"purpose": ("The abx_words split of the evaluation corpus (byte-identical "
                            "records) for across-speaker word ABX."),
                **_summarise(specs, summary, ("abx_words",), speakers),
                "abx_words": [w for w in sentences.ABX_WORDS if w in spoken]}

    return _build(out_dir, config, specs, ("abx_words",), summarise, num_workers, progress)


def triphone_triplets(entries: list[dict[str, Any]], min_phone_samples: int = 160
                      ) -> dict[str, int]:
    """Across-speaker triphone ABX material in `entries` (items with `speaker` and
    `alignment`).

    A triplet takes A and B from one speaker with the same context (previous and next phone)
    and different centre phones, and X from another speaker with A's triphone (Libri-light's
    across-speaker ABX). Centre phones shorter than `min_phone_samples` (10 ms) are left out,
    as `ssl_jax.downstream.abx.triphone_items` leaves them out.

    Returns:
        {"triphones": distinct (previous, centre, next) phones, "contexts": contexts with
        at least two centres in one speaker, "categories": distinct (context, centre A,
        centre B, speaker of A and B, speaker of X), "triplets": token triplets over all
        categories}.
    """
    # context -> speaker -> centre -> occurrences
    table: dict = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
    for e in entries:
        ph = e["alignment"]["phones"]
        for (prev, _, _), (centre, start, end), (nxt, _, _) in zip(ph, ph[1:], ph[2:]):
            if end - start >= min_phone_samples:
                table[(prev, nxt)][e["speaker"]][centre] += 1
    contexts = categories = triplets = 0
    for by_speaker in table.values():
        contexts += any(len(c) >= 2 for c in by_speaker.values())
        for s, centres in by_speaker.items():
            for a, na in centres.items():
                for b, nb in centres.items():
                    if a == b:
                        continue
                    for x, other in by_speaker.items():
                        if x != s and a in other:
                            categories += 1
                            triplets += na * nb * other[a]
    triphones = len({(ctx, c) for ctx, by in table.items() for cs in by.values() for c in cs})
    return {"triphones": triphones, "contexts": contexts, "categories": categories,
            "triplets": triplets}


def _render_all(tmp: str, specs: list[dict], splits: tuple[str, ...], workers: int,
                progress: bool) -> dict[str, Any]:
    writers = {s: ShardWriter(tmp, s) for s in splits}
    busy = 0.0
    samples = 0
    phone_set: set[str] = set()
    start = time.perf_counter()
    pool = None
    try:
        if workers > 1:
            # fork is unsafe once JAX (multithreaded) is loaded; spawn then, fork otherwise
            # (spawn re-imports the caller's main module, which scripts may not guard).
            method = "spawn" if "jax" in sys.modules else "fork"
            pool = multiprocessing.get_context(method).Pool(workers)
            results = pool.imap(render_utterance, specs, chunksize=4)
        else:
            results = map(render_utterance, specs)
        for i, (spec, res) in enumerate(zip(specs, results)):
            busy += res["seconds"]
            samples += res["audio"].shape[0]
            phone_set.update(res["phonemes"])
            writers[spec["split"]].add(res["audio"], {
                "id": spec["id"], "speaker": spec["speaker"], "language": spec["language"],
                "text": res["text"], "phonemes": res["phonemes"], "task": spec["task"],
                "style": spec["style"], "keyword": spec["keyword"], "intent": spec["intent"],
                "alignment": res["alignment"]})
            spec["num_samples"] = int(res["audio"].shape[0])
            spec["alignment"] = res["alignment"]
            if progress and (i + 1) % 500 == 0:
                print(f"  {i + 1}/{len(specs)} utterances", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        for w in writers.values():
            w.close()
    wall = time.perf_counter() - start
    audio_seconds = samples / SAMPLE_RATE
    return {"busy_seconds": busy, "wall_seconds": wall, "audio_seconds": audio_seconds,
            "phonemes": sorted(phone_set)}


def _intent_key(intent: dict[str, str]) -> str:
    return f"{intent['action']}/{intent['object']}/{intent['location']}"


def _summarise(specs: list[dict], summary: dict, splits: tuple[str, ...],
               speakers: list[dict[str, Any]], pretraining: bool = False) -> dict[str, Any]:
    """Counts and hours per split, speakers and labels: the part of `corpus.json` that is a
    pure function of the plan and the rendered audio (`pretraining`: styles set the level by
    a gain, `STYLE_LEVEL_DB`, instead of espeak's volume)."""
    info = {}
    counts = {}
    for split in splits:
        items = [s for s in specs if s["split"] == split]
        info[split] = {
            "utterances": len(items),
            "hours": sum(s["num_samples"] for s in items) / SAMPLE_RATE / 3600.0,
            "speakers": len({s["speaker"] for s in items if s["speaker"] != SILENCE_SPEAKER}),
        }
        counts[split] = {
            key: dict(sorted(collections.Counter(
                s[key] for s in items if s[key] is not None).items()))
            for key in ("task", "language", "style", "keyword")}
        counts[split]["intent"] = dict(sorted(collections.Counter(
            _intent_key(s["intent"]) for s in items if s["intent"] is not None).items()))
        counts[split]["hours_by_task"] = {
            t: sum(s["num_samples"] for s in items if s["task"] == t) / SAMPLE_RATE / 3600.0
            for t in sorted({s["task"] for s in items})}
    languages = sorted({s["language"] for s in speakers})
    total_samples = sum(s["num_samples"] for s in specs)
    return {
        "sample_rate": SAMPLE_RATE,
        "hours": total_samples / SAMPLE_RATE / 3600.0,
        "num_utterances": len(specs),
        "num_speakers": len(speakers),
        "num_languages": len({VOICE_LANG[s["voice"]] for s in speakers}),
        "splits": info,
        "counts": counts,
        "languages": languages,
        "voices": sorted({f"{s['voice']}+{s['variant']}" for s in speakers}),
        "speakers": speakers,
        "silence_speaker": SILENCE_SPEAKER,
        "keywords": list(sentences.KEYWORD_LABELS),
        "intent_labels": sentences.intent_labels(),
        "styles": {k: dict(zip(("rate_factor", "pitch_offset", "range_offset", "volume"), v))
                   for k, v in STYLE_PROSODY.items()} if not pretraining else {
            k: {"rate_factor": v[0], "pitch_offset": v[1], "range_offset": v[2],
                "level_db": STYLE_LEVEL_DB[k]} for k, v in STYLE_PROSODY.items()},
        "style_note": PRETRAIN_STYLE_NOTE if pretraining else STYLE_NOTE,
        "phoneme_inventory": summary["phonemes"],
        "phoneme_rule": ("one token per espeak phoneme (IPA, from espeak_TextToPhonemes with a "
                         "phoneme separator): affricates, diphthongs, long vowels and "
                         "diacritics stay in one token; stress marks, word boundaries and "
                         "language switches are dropped"),
        "alignment_rule": ("`alignment` = {phones: [[phone, start, end], ...], words: [[word, "
                           "start, end], ...]}, [start, end) in samples of the stored 16 kHz "
                           "audio; the phones are exactly `phonemes`, timed by espeak's "
                           "phoneme events; silence (pauses, plosive closures) belongs to no "
                           "phone; a word spans its phones"),
    }


def _build_figures(summary: dict[str, Any], workers: int) -> dict[str, Any]:
    # Timings differ between runs; everything else in corpus.json is a pure function of the
    # config.
    return {
        "workers": workers,
        "wall_seconds": summary["wall_seconds"],
        "synthesis_cpu_seconds": summary["busy_seconds"],
        "real_time_factor_per_core": summary["audio_seconds"] / max(summary["busy_seconds"], 1e-9),
        "real_time_factor_wall": summary["audio_seconds"] / max(summary["wall_seconds"], 1e-9),
    }


def cache_dir() -> str:
    """`$SSL_JAX_CACHE`, else `~/.cache/ssl_jax`."""
    return os.environ.get("SSL_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ssl_jax")


def _ensure(name: str, build: Callable[[str], Any]) -> str:
    """`cache_dir()/name`, built once by `build(path)`.

    Safe when several processes ask at once: a file lock serialises the build and the folder
    appears atomically (built under a temporary name, then renamed).
    """
    root = cache_dir()
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, name)
    if os.path.exists(os.path.join(final, "corpus.json")):
        return final
    with open(os.path.join(root, name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.path.exists(os.path.join(final, "corpus.json")):
                build(final)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def ensure_corpus(hours: float = 1.0, seed: int = 0) -> str:
    """The shard folder of the pretraining corpus, built once into the cache folder
    (`corpus-v{FORMAT_VERSION}-h{hours}-s{seed}`)."""
    hours, seed = _check_args(hours, seed)
    return _ensure(f"corpus-v{FORMAT_VERSION}-h{hours}-s{seed}",
                   lambda path: build_corpus(path, hours=hours, seed=seed))


def ensure_eval_corpus(seed: int = 0, scale: float = 1.0) -> str:
    """The shard folder of the evaluation corpus, built once into the cache folder
    (`evalcorpus-v{EVAL_FORMAT_VERSION}-s{seed}`, with `-x{scale}` when scale is not 1)."""
    seed, scale = _check_seed(seed), _check_scale(scale)
    size = "" if scale == 1.0 else f"-x{scale:g}"
    return _ensure(f"evalcorpus-v{EVAL_FORMAT_VERSION}{size}-s{seed}",
                   lambda path: build_eval_corpus(path, seed=seed, scale=scale))


def ensure_eval_abx_words(seed: int = 0, scale: float = 1.0) -> str:
    """The shard folder holding only the `abx_words` split of the evaluation corpus
    (`build_eval_abx_words`), built once into the cache folder
    (`evalabxwords-v{EVAL_FORMAT_VERSION}-s{seed}`, with `-x{scale}` when scale is not 1)."""
    seed, scale = _check_seed(seed), _check_scale(scale)
    size = "" if scale == 1.0 else f"-x{scale:g}"
    return _ensure(f"evalabxwords-v{EVAL_FORMAT_VERSION}{size}-s{seed}",
                   lambda path: build_eval_abx_words(path, seed=seed, scale=scale))


def _print_summary(out: str, corpus: dict[str, Any], wall: float) -> None:
    b = corpus["build"]
    requested = f" (requested {corpus['hours_requested']:g} h)" if "hours_requested" in corpus else ""
    print(f"{corpus['corpus']} corpus: {out}")
    print(f"  {corpus['num_utterances']} utterances, {corpus['hours']:.3f} h{requested}, "
          f"{corpus['num_speakers']} speakers, {len(corpus['languages'])} voices/accents in "
          f"{corpus['num_languages']} languages")
    for split, s in corpus["splits"].items():
        tasks = corpus["counts"][split]["task"]
        print(f"  {split:13s} {s['utterances']:6d} utts {s['hours']:.3f} h "
              f"{s['speakers']:3d} speakers  {tasks}")
    print(f"  synthesis: {b['real_time_factor_per_core']:.0f}x real time per core, "
          f"{b['real_time_factor_wall']:.0f}x overall with {b['workers']} workers; "
          f"total {wall:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssl_jax.data.synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output shard folder")
    p.add_argument("--hours", type=float, default=None,
                   help="target hours of audio of the pretraining corpus (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--voices", default=None,
                   help="comma-separated espeak voices to use (default: all of the corpus)")
    p.add_argument("--eval", action="store_true",
                   help="build the evaluation corpus instead of the pretraining corpus")
    p.add_argument("--scale", type=float, default=None,
                   help="evaluation corpus only: multiplies every count (default 1)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.eval:
            if args.hours is not None or args.voices is not None:
                raise ValueError("--hours and --voices apply to the pretraining corpus, not --eval")
            corpus = build_eval_corpus(args.out, seed=args.seed, num_workers=args.workers,
                                       scale=1.0 if args.scale is None else args.scale,
                                       progress=True)
        else:
            if args.scale is not None:
                raise ValueError("--scale applies to the evaluation corpus (--eval) only")
            corpus = build_corpus(args.out, hours=1.0 if args.hours is None else args.hours,
                                  seed=args.seed, num_workers=args.workers,
                                  voices=args.voices.split(",") if args.voices else None,
                                  progress=True)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_summary(args.out, corpus, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
