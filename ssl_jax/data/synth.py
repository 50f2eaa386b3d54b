"""The embedded speech corpus: multi-speaker speech synthesised in-process with eSpeak NG.

`python -m ssl_jax.data.synth --out DIR [--hours H] [--seed S]` writes 16 kHz shards
(`ssl_jax.data.shards`), per-split manifests and `DIR/corpus.json`. It gives the project a
corpus with labels for every downstream task without any download:

* speakers: espeak voice (7 English accents, 10 other languages) x voice variant x base
  pitch / rate / pitch range; `test_unseen` holds speakers absent from the other splits;
* text and IPA phones from espeak itself (`ssl_jax.data.espeak.split_ipa` states the rule);
* tasks: `sentence` (random word sequences from wordfreq vocabularies, every language),
  `keyword` (Speech-Commands-like 1 s clips of ten English command words, `_unknown_` other
  words, and `_silence_` clips of low-level noise without speech), `intent`
  (Fluent-Speech-Commands-like English commands with action / object / location labels);
* speaking styles `neutral`, `fast_high`, `slow_low`, `loud`. These are PROSODY classes made
  by changing espeak's rate, pitch, pitch range and volume; they are not emotions, and a model
  that separates them has learnt tempo, pitch and loudness, nothing about affect.

`_silence_` clips belong to no speaker: their `speaker` is `_none_` and `language` `none`.

Every utterance is planned in the main process from the seed (text, voice, prosody, noise
seed), rendered by worker processes with a freshly loaded espeak (see `ssl_jax.data.espeak`),
and written in plan order, so the same seed gives byte-identical shards and manifests for any
number of workers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssl_jax.data import sentences
from ssl_jax.data.shards import SAMPLE_RATE, ShardWriter

FORMAT = "ssl_jax-synth-v1"
SPLITS = ("train", "valid", "test", "test_unseen")
STYLES = ("neutral", "fast_high", "slow_low", "loud")
SILENCE_SPEAKER = "_none_"
MIN_SECONDS, MAX_SECONDS = 1.0, 15.0

STYLE_NOTE = (
    "Speaking styles are prosody classes, not emotions: fast_high = faster speech at higher "
    "pitch, slow_low = slower speech at lower pitch with a narrower pitch range, loud = higher "
    "amplitude with a wider pitch range, neutral = the speaker's base settings. They are made "
    "with espeak's rate/pitch/range/volume controls and carry no affective content.")

# espeak voice -> wordfreq language of its vocabulary. The voice name is the `language` label.
ENGLISH_VOICES = ("en-us", "en-us-nyc", "en-gb-x-rp", "en-gb-scotland", "en-029",
                  "en-gb-x-gbclan", "en-gb-x-gbcwmd")
OTHER_VOICES = ("de", "fr", "es", "it", "pt", "nl", "sv", "pl", "cs", "fi")
VOICE_LANG = {**{v: "en" for v in ENGLISH_VOICES}, **{v: v for v in OTHER_VOICES}}
SPEAKERS_PER_VOICE = {**{v: 6 for v in ENGLISH_VOICES}, **{v: 4 for v in OTHER_VOICES}}
VARIANTS = ("m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "f5", "m6", "m7")

# Per style: (rate factor, pitch offset, range offset, espeak volume).
STYLE_PROSODY = {
    "neutral": (1.0, 0, 0, 60),
    "fast_high": (1.45, 22, 0, 60),
    "slow_low": (0.7, -22, -15, 60),
    "loud": (1.05, 6, 25, 130),
}
# Shares of an English speaker's utterances; other languages speak sentences only.
TASK_SHARES = {"keyword": 0.35, "intent": 0.25}
MIN_SPEAKERS = 20
SECONDS_PER_SPEAKER = 11.0  # speaker count grows with the requested hours up to the catalogue
MIN_SEEN_UTTERANCES = 10  # two train utterances per style, one valid, one test
MIN_UNSEEN_UTTERANCES = 6  # every style, and several per speaker for verification trials


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak voice + variant with base prosody."""

    id: str
    voice: str
    variant: str
    pitch: int
    rate: int
    range: int

    @property
    def language(self) -> str:
        return self.voice

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "voice": self.voice, "variant": self.variant,
                "language": self.language, "pitch": self.pitch, "rate": self.rate,
                "range": self.range}


def speaker_catalogue(voices: tuple[str, ...] | None = None) -> list[Speaker]:
    """All speakers, interleaved over voices so that any prefix spans every voice.

    The catalogue is fixed (independent of the seed) so speaker ids are stable.
    """
    all_voices = ENGLISH_VOICES + OTHER_VOICES
    if voices is None:
        voices = all_voices
    unknown = [v for v in voices if v not in VOICE_LANG]
    if unknown:
        raise ValueError(f"unknown voice(s) {unknown}; the corpus knows {list(all_voices)}")
    out = []
    k = 0
    for r in range(max(SPEAKERS_PER_VOICE.values())):
        for vi, voice in enumerate(all_voices):
            if r >= SPEAKERS_PER_VOICE[voice]:
                continue
            k += 1
            if voice not in voices:
                continue
            out.append(Speaker(
                id=f"spk{k - 1:03d}", voice=voice,
                variant=VARIANTS[(r * 7 + vi * 3) % len(VARIANTS)],
                pitch=30 + (k * 37) % 41, rate=150 + (k * 23) % 51, range=30 + (k * 53) % 51))
    return out


def style_prosody(spk: Speaker, style: str):
    """espeak settings of `spk` speaking in `style`."""
    from ssl_jax.data.espeak import Prosody

    factor, dpitch, drange, volume = STYLE_PROSODY[style]
    return Prosody(rate=int(round(spk.rate * factor)), pitch=int(np.clip(spk.pitch + dpitch, 0, 99)),
                   range=int(np.clip(spk.range + drange, 0, 99)), volume=volume)


# ----------------------------------------------------------------------------- planning


def _plan(hours: float, seed: int, voices: tuple[str, ...] | None) -> tuple[list[dict], list[Speaker], list[Speaker]]:
    """Every utterance of the corpus as a spec dict, in write order; (specs, seen, unseen)."""
    catalogue = speaker_catalogue(voices)
    target = hours * 3600.0
    num = int(np.clip(round(target / SECONDS_PER_SPEAKER), min(MIN_SPEAKERS, len(catalogue)),
                      len(catalogue)))
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
        style_offset = int(rng.integers(len(STYLES)))
        counters = collections.Counter()
        for j, (task, split) in enumerate(zip(tasks, splits)):
            # Styles cycle within each split, so every split sees every style of a speaker.
            style = STYLES[(counters[split] + style_offset) % len(STYLES)]
            counters[split] += 1
            spec = _utterance(rng, spk, task, style, sent_median)
            spec.update(id=f"{spk.id}-{j:04d}", split=split)
            by_split[split].append(spec)
            keyword_clips[split] += task == "keyword"

    # `_silence_` as one of the twelve keyword classes, as in Speech Commands.
    k = 0
    for split in SPLITS[:3]:
        for _ in range(int(round(keyword_clips[split] / 11))):
            by_split[split].append({
                "id": f"silence-{k:04d}", "split": split, "task": "keyword", "style": "neutral",
                "speaker": SILENCE_SPEAKER, "language": "none", "voice": None, "text": "",
                "keyword": sentences.SILENCE, "intent": None, "prosody": None,
                "seed": int(rng.integers(2**31))})
            k += 1

    specs = []
    for split in SPLITS:
        items = by_split[split]
        order = rng.permutation(len(items))
        specs.extend(items[i] for i in order)
    return specs, seen, unseen


def _utterance(rng: np.random.Generator, spk: Speaker, task: str, style: str,
               sent_median: float) -> dict[str, Any]:
    prosody = style_prosody(spk, style)
    keyword = intent = None
    if task == "sentence":
        seconds = float(np.clip(sent_median * math.exp(rng.normal(0.0, 0.45)), 1.2, 12.0))
        # espeak's rate is in words per minute; words of other languages are longer.
        wps = prosody.rate / 60.0 * (1.0 if VOICE_LANG[spk.voice] == "en" else 0.75)
        text = sentences.sentence(rng, VOICE_LANG[spk.voice], max(1, int(round(seconds * wps))))
    elif task == "keyword":
        keyword, text = sentences.keyword(rng)
    else:
        text, intent = sentences.intent(rng)
    return {"task": task, "style": style, "speaker": spk.id, "language": spk.language,
            "voice": f"{spk.voice}+{spk.variant}", "text": text, "keyword": keyword,
            "intent": intent, "prosody": prosody, "seed": int(rng.integers(2**31))}


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


def _trim(x: np.ndarray, level: float = 1e-3) -> np.ndarray:
    """Cuts the silence (espeak writes exact zeros) around a spoken word, `[samples]`."""
    loud = np.nonzero(np.abs(x) > level)[0]
    return x[loud[0]:loud[-1] + 1] if loud.size else x[:0]


def _speak(text: str, voice: str, prosody, seed: int) -> tuple[np.ndarray, list[str]]:
    import soxr

    from ssl_jax.data import espeak

    pcm, rate, phones = espeak.render(text, voice, prosody, seed=seed)
    audio = soxr.resample(pcm.astype(np.float32) / 32768.0, rate, SAMPLE_RATE, quality="HQ")
    return np.asarray(audio, np.float32), phones


def render_utterance(spec: dict[str, Any]) -> dict[str, Any]:
    """Synthesises one planned utterance.

    Returns:
        {"audio": float32 [samples] at 16 kHz, "text", "phonemes", "seconds"}, where
        "seconds" is the CPU time spent (so the real-time factor per core does not depend on
        how busy the machine is).
    """
    start = time.process_time()
    rng = np.random.default_rng(spec["seed"])
    text, phones = spec["text"], []
    floor_db = float(rng.uniform(-72.0, -58.0))
    if spec["voice"] is None:  # `_silence_`: noise only
        audio = _noise(rng, SAMPLE_RATE, float(rng.uniform(-60.0, -38.0)))
    else:
        words = text.split()
        while True:
            audio, phones = _speak(text, spec["voice"], spec["prosody"], spec["seed"])
            if audio.shape[0] <= (MAX_SECONDS - 0.6) * SAMPLE_RATE or len(words) < 2:
                break
            words = words[:max(1, (2 * len(words)) // 3)]  # too long: drop the last third
            text = " ".join(words).rstrip(".") + "."
        if spec["task"] == "keyword":
            word = _trim(audio)
            length = max(SAMPLE_RATE, word.shape[0] + SAMPLE_RATE // 10)
            offset = int(rng.integers(0, length - word.shape[0] + 1))
            audio = np.zeros(length, np.float32)
            audio[offset:offset + word.shape[0]] = word
        else:
            pad = rng.integers(SAMPLE_RATE // 20, SAMPLE_RATE // 4, size=2)
            audio = np.concatenate([np.zeros(pad[0], np.float32), audio, np.zeros(pad[1], np.float32)])
            if audio.shape[0] < MIN_SECONDS * SAMPLE_RATE:
                extra = int(MIN_SECONDS * SAMPLE_RATE) - audio.shape[0]
                audio = np.concatenate([audio, np.zeros(extra, np.float32)])
        audio = audio + _noise(rng, audio.shape[0], floor_db)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    return {"audio": audio, "text": text, "phonemes": phones,
            "seconds": time.process_time() - start}


# ----------------------------------------------------------------------------- building


def _config(hours: float, seed: int, voices: tuple[str, ...] | None) -> dict[str, Any]:
    return {"format": FORMAT, "hours_requested": hours, "seed": seed,
            "voices_requested": list(voices) if voices else None}


def _check_args(hours: float, seed: int) -> tuple[float, int]:
    if not isinstance(hours, (int, float)) or not math.isfinite(hours) or hours <= 0:
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    if hours > 1000:
        raise ValueError(f"hours={hours} is too large for the embedded corpus (max 1000)")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return float(hours), int(seed)


def _same_corpus(path: str, config: dict[str, Any]) -> bool:
    with open(path) as f:
        existing = json.load(f)
    return all(existing.get(k) == v for k, v in config.items())


def build_corpus(out_dir: str, hours: float = 1.0, seed: int = 0, *,
                 num_workers: int | None = None, voices: tuple[str, ...] | list[str] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Builds the corpus into `out_dir` (built in a temporary sibling folder, then renamed).

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
    corpus_json = os.path.join(out_dir, "corpus.json")
    if os.path.exists(corpus_json):
        if _same_corpus(corpus_json, config):
            with open(corpus_json) as f:
                return json.load(f)
        with open(corpus_json) as f:
            old = json.load(f)
        raise ValueError(
            f"{out_dir} already holds a different corpus (hours={old.get('hours_requested')}, "
            f"seed={old.get('seed')}, voices={old.get('voices_requested')}); asked for "
            f"hours={hours}, seed={seed}, voices={voices}: choose another folder or delete it")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f"{out_dir} is not empty and holds no corpus.json; refusing to write into it")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir} exists and is not a folder")

    from ssl_jax.data import espeak

    specs, seen, unseen = _plan(hours, seed, voices)
    for voice in sorted({s["voice"] for s in specs if s["voice"]}):
        espeak.check_voice(voice)  # a clear error before any work starts
    workers = max(1, int(num_workers or os.cpu_count() or 1))

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        summary = _render_all(tmp, specs, workers, progress)
        corpus = _summarise(config, specs, summary, seen, unseen, workers)
        with open(os.path.join(tmp, "corpus.json"), "w") as f:
            json.dump(corpus, f, indent=1, ensure_ascii=False)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty (checked above)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished the same folder first.
            if os.path.exists(corpus_json) and _same_corpus(corpus_json, config):
                with open(corpus_json) as f:
                    return json.load(f)
            raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return corpus


def _render_all(tmp: str, specs: list[dict], workers: int, progress: bool) -> dict[str, Any]:
    writers = {s: ShardWriter(tmp, s) for s in SPLITS}
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
                "style": spec["style"], "keyword": spec["keyword"], "intent": spec["intent"]})
            spec["num_samples"] = int(res["audio"].shape[0])
            if progress and (i + 1) % 200 == 0:
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


def _summarise(config: dict, specs: list[dict], summary: dict, seen: list[Speaker],
               unseen: list[Speaker], workers: int) -> dict[str, Any]:
    splits = {}
    counts = {}
    for split in SPLITS:
        items = [s for s in specs if s["split"] == split]
        splits[split] = {
            "utterances": len(items),
            "hours": sum(s["num_samples"] for s in items) / SAMPLE_RATE / 3600.0,
            "speakers": len({s["speaker"] for s in items if s["speaker"] != SILENCE_SPEAKER}),
        }
        counts[split] = {
            key: dict(sorted(collections.Counter(
                s[key] for s in items if s[key] is not None).items()))
            for key in ("task", "language", "style", "keyword")}
        counts[split]["hours_by_task"] = {
            t: sum(s["num_samples"] for s in items if s["task"] == t) / SAMPLE_RATE / 3600.0
            for t in ("sentence", "keyword", "intent")}
    speakers = [dict(s.as_dict(), split="seen") for s in seen] + \
               [dict(s.as_dict(), split="unseen") for s in unseen]
    languages = sorted({s.language for s in seen + unseen})
    total_samples = sum(s["num_samples"] for s in specs)
    return {
        **config,
        "sample_rate": SAMPLE_RATE,
        "hours": total_samples / SAMPLE_RATE / 3600.0,
        "num_utterances": len(specs),
        "num_speakers": len(speakers),
        "num_languages": len({VOICE_LANG[s.voice] for s in seen + unseen}),
        "splits": splits,
        "counts": counts,
        "languages": languages,
        "voices": sorted({f"{s.voice}+{s.variant}" for s in seen + unseen}),
        "speakers": speakers,
        "silence_speaker": SILENCE_SPEAKER,
        "keywords": list(sentences.KEYWORD_LABELS),
        "intent_labels": sentences.intent_labels(),
        "styles": {k: dict(zip(("rate_factor", "pitch_offset", "range_offset", "volume"), v))
                   for k, v in STYLE_PROSODY.items()},
        "style_note": STYLE_NOTE,
        "phoneme_inventory": summary["phonemes"],
        "phoneme_rule": ("one token per espeak phoneme (IPA, from espeak_TextToPhonemes with a "
                         "phoneme separator): affricates, diphthongs, long vowels and "
                         "diacritics stay in one token; stress marks and word boundaries are "
                         "dropped"),
        # Timings differ between runs; everything above is a pure function of the config.
        "build": {
            "workers": workers,
            "wall_seconds": summary["wall_seconds"],
            "synthesis_cpu_seconds": summary["busy_seconds"],
            "real_time_factor_per_core": summary["audio_seconds"] / max(summary["busy_seconds"], 1e-9),
            "real_time_factor_wall": summary["audio_seconds"] / max(summary["wall_seconds"], 1e-9),
        },
    }


def cache_dir() -> str:
    """`$SSL_JAX_CACHE`, else `~/.cache/ssl_jax`."""
    return os.environ.get("SSL_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ssl_jax")


def ensure_corpus(hours: float = 1.0, seed: int = 0) -> str:
    """The shard folder of the embedded corpus, built once into the cache folder.

    Safe when several processes ask at once: a file lock serialises the build and the folder
    appears atomically (built under a temporary name, then renamed).
    """
    hours, seed = _check_args(hours, seed)
    root = cache_dir()
    os.makedirs(root, exist_ok=True)
    name = f"corpus-h{hours}-s{seed}"
    final = os.path.join(root, name)
    if os.path.exists(os.path.join(final, "corpus.json")):
        return final
    with open(os.path.join(root, name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.path.exists(os.path.join(final, "corpus.json")):
                build_corpus(final, hours=hours, seed=seed)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def _print_summary(out: str, corpus: dict[str, Any], wall: float) -> None:
    b = corpus["build"]
    print(f"corpus: {out}")
    print(f"  {corpus['num_utterances']} utterances, {corpus['hours']:.3f} h "
          f"(requested {corpus['hours_requested']:g} h), {corpus['num_speakers']} speakers, "
          f"{len(corpus['languages'])} voices/accents in {corpus['num_languages']} languages")
    for split, s in corpus["splits"].items():
        tasks = corpus["counts"][split]["task"]
        print(f"  {split:12s} {s['utterances']:6d} utts {s['hours']:.3f} h "
              f"{s['speakers']:3d} speakers  {tasks}")
    print(f"  synthesis: {b['real_time_factor_per_core']:.0f}x real time per core, "
          f"{b['real_time_factor_wall']:.0f}x overall with {b['workers']} workers; "
          f"total {wall:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssl_jax.data.synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output shard folder")
    p.add_argument("--hours", type=float, default=1.0, help="target hours of audio (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--voices", default=None,
                   help="comma-separated espeak voices to use (default: all of the corpus)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        corpus = build_corpus(args.out, hours=args.hours, seed=args.seed, num_workers=args.workers,
                              voices=args.voices.split(",") if args.voices else None, progress=True)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_summary(args.out, corpus, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
