"""Readers for the datasets SUPERB evaluates on, in their released folder layouts.

Each reader returns `{split: [entry, ...]}`; an entry holds `id`, `path` (audio file),
optional `start`/`stop` (sample range at 16 kHz) and the manifest fields the tasks read
(`speaker`, `language`, `text`, `phonemes`, `task`, `keyword`, `intent`, `style`). `prepare`
turns a reader's output into a shard folder once, so that every task reads real data
through the same `ShardSource` path as the embedded corpus.

Layouts: LibriSpeech (`SUBSET/speaker/chapter/*.flac` + `speaker-chapter.trans.txt`),
Speech Commands v1/v2 (word folders, `validation_list.txt`, `testing_list.txt`,
`_background_noise_`), VoxCeleb1 (`wav/idXXXXX/video/NNNNN.wav`, `iden_split.txt`,
`veri_test.txt`), Fluent Speech Commands (`data/{train,valid,test}_data.csv`) and IEMOCAP
(`SessionN/dialog/EmoEvaluation/*.txt`, `SessionN/sentences/wav/DIALOG/UTT.wav`).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ssl_jax.data.prepare import load_audio

log = logging.getLogger(__name__)

SPEECH_COMMANDS_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
IEMOCAP_CLASSES = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}

# split -> entries; a reader may add `_trials` (verification trials) and `_stats` (a dict that
# `prepare` writes to prepare.json as `reader_stats`).
Entries = dict[str, Any]


def _base(**kw) -> dict[str, Any]:
    e = {"language": "en", "task": "sentence", "keyword": None, "intent": None, "style": None,
         "text": "", "phonemes": []}
    e.update(kw)
    return e


def _require(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")


def read_lexicon(path: str) -> dict[str, list[str]]:
    """`WORD PH1 PH2 ...` per line (e.g. librispeech-lexicon.txt); first pronunciation wins."""
    lex: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                # Stress digits (AH0, AH1) are dropped, as in SUPERB's phoneme set.
                lex.setdefault(parts[0].lower(), [re.sub(r"\d", "", p) for p in parts[1:]])
    return lex


def librispeech(root: str, subsets: dict[str, str] | None = None, lexicon: str = "") -> Entries:
    """LibriSpeech: `root/SUBSET/speaker/chapter/speaker-chapter-utt.flac` with transcripts.

    Args:
        subsets: split name -> subset folder; default train-clean-100 / dev-clean / test-clean.
        lexicon: optional word -> phones file; with it, entries carry `phonemes` (utterances
            with out-of-lexicon words get none and PR skips them; their count per split and the
            most frequent missing words go to `prepare.json` under `reader_stats`, with a warning).
    """
    subsets = dict(subsets or {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"})
    lex = read_lexicon(lexicon) if lexicon else None
    out: Entries = {}
    oov_utterances: dict[str, int] = {}
    oov_words: dict[str, int] = {}
    for split, sub in subsets.items():
        d = os.path.join(root, sub)
        _require(d, f"LibriSpeech subset {sub!r}")
        entries = []
        oov_utterances[split] = 0
        for trans in sorted(glob.glob(os.path.join(d, "*", "*", "*.trans.txt"))):
            folder = os.path.dirname(trans)
            with open(trans, encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    uid, text = line.strip().split(" ", 1)
                    path = os.path.join(folder, uid + ".flac")
                    if not os.path.exists(path):
                        log.warning("missing audio for %s", uid)
                        continue
                    phones: list[str] = []
                    if lex is not None:
                        words = text.lower().split()
                        missing = [w for w in words if w not in lex]
                        if missing:
                            oov_utterances[split] += 1
                            for w in missing:
                                oov_words[w] = oov_words.get(w, 0) + 1
                        else:
                            phones = [p for w in words for p in lex[w]]
                    entries.append(_base(id=uid, path=path, speaker=uid.split("-")[0], text=text,
                                         phonemes=phones))
        if not entries:
            raise ValueError(f"no LibriSpeech utterances under {d}")
        out[split] = entries
    if lex is not None:
        common = sorted(oov_words, key=lambda w: (-oov_words[w], w))[:10]
        out["_stats"] = {"oov_utterances": oov_utterances, "oov_words": len(oov_words), "oov_examples": common}
        if any(oov_utterances.values()):
            log.warning("LibriSpeech: utterances with out-of-lexicon words get no phonemes (PR skips them): %s; "
                        "e.g. %s", ", ".join(f"{k} {v}/{len(out[k])}" for k, v in oov_utterances.items()),
                        ", ".join(common[:5]))
    return out


def speech_commands(root: str, keywords=SPEECH_COMMANDS_KEYWORDS, silence_seconds: float = 1.0,
                    test_root: str = "") -> Entries:
    """Speech Commands v1/v2: `root/WORD/SPEAKER_nohash_N.wav`, split by the two list files.

    SUPERB's KS protocol (Yang et al., 2021) on v0.01: 12 classes, the ten `keywords`,
    `_unknown_` (every other word) and `_silence_`; train and valid from `validation_list.txt`
    (the rest of the non-test files train), test from the separately released v0.01 test set
    `test_root` (one folder per class, `_silence_` and `_unknown_` included). `_silence_`
    train/valid clips are disjoint `silence_seconds` windows of the `_background_noise_`
    recordings, every tenth to valid (s3prl draws random crops of the whole recordings
    instead). Without `test_root` the test split is `testing_list.txt` plus every tenth
    (+5) noise window, with a warning that this is not SUPERB's test set.
    """
    for name in ("validation_list.txt", "testing_list.txt"):
        _require(os.path.join(root, name), f"Speech Commands {name}")
    if test_root:
        _require(test_root, "Speech Commands test set (test_root)")
        for name in ("_silence_", "_unknown_"):
            if not os.path.isdir(os.path.join(test_root, name)):
                log.warning("Speech Commands test set %s has no %s folder", test_root, name)
    else:
        log.warning("Speech Commands: no test_root; the test split comes from testing_list.txt, not the "
                    "separately released test set SUPERB scores on")
    lists = {}
    for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        with open(os.path.join(root, name)) as f:
            lists[split] = {line.strip() for line in f if line.strip()}
    out: Entries = {"train": [], "valid": [], "test": []}
    kw = set(keywords)

    def clip(rel: str, word: str, path: str) -> dict[str, Any]:
        label = word if word in kw else ("_silence_" if word == "_silence_" else "_unknown_")
        return _base(id=rel.replace("/", "_")[:-4], path=path, speaker=os.path.basename(rel).split("_nohash_")[0],
                     task="keyword", keyword=label, text="" if word.startswith("_") else word)

    for word_dir in sorted(glob.glob(os.path.join(root, "*", ""))):
        word = os.path.basename(os.path.normpath(word_dir))
        if word.startswith("_"):
            continue
        for path in sorted(glob.glob(os.path.join(word_dir, "*.wav"))):
            rel = f"{word}/{os.path.basename(path)}"
            split = "valid" if rel in lists["valid"] else "test" if rel in lists["test"] else "train"
            if split == "test" and test_root:
                continue
            out[split].append(clip(rel, word, path))
    import soundfile as sf

    for path in sorted(glob.glob(os.path.join(root, "_background_noise_", "*.wav"))):
        info = sf.info(path)
        win = int(silence_seconds * info.samplerate)
        for k in range(info.frames // win):
            split = "valid" if k % 10 == 0 else "test" if k % 10 == 5 and not test_root else "train"
            e = _base(id=f"silence_{os.path.basename(path)[:-4]}_{k}", path=path, speaker="noise",
                      task="keyword", keyword="_silence_", start=k * win, stop=(k + 1) * win,
                      source_rate=info.samplerate)
            out[split].append(e)
    if test_root:
        for path in sorted(glob.glob(os.path.join(test_root, "*", "*.wav"))):
            word = os.path.basename(os.path.dirname(path))
            out["test"].append(clip(f"{word}/{os.path.basename(path)}", word, path))
    for split, entries in out.items():
        if not entries:
            raise ValueError(f"Speech Commands under {root}: split {split!r} is empty")
    return out


def voxceleb1(root: str) -> Entries:
    """VoxCeleb1: `root/wav/idXXXXX/VIDEO/NNNNN.wav`, `root/iden_split.txt`, `root/veri_test.txt`.

    Splits: `sid_train`/`sid_valid`/`sid_test` (iden_split 1/2/3); `asv_train` (every file of
    the speakers absent from veri_test), `asv_valid` (every 20th of those, held out) and
    `asv_test` (the files of veri_test, whose official trials `prepare` writes to
    `asv_test.trials.tsv`).
    """
    for name in ("iden_split.txt", "veri_test.txt"):
        _require(os.path.join(root, name), f"VoxCeleb1 {name}")
    wav = os.path.join(root, "wav")

    def entry(rel: str) -> dict[str, Any]:
        return _base(id=rel[:-4].replace("/", "-"), path=os.path.join(wav, rel), speaker=rel.split("/")[0],
                     language="", text=None)

    out: Entries = {"sid_train": [], "sid_valid": [], "sid_test": []}
    with open(os.path.join(root, "iden_split.txt")) as f:
        for line in f:
            if line.strip():
                k, rel = line.split()
                out[("", "sid_train", "sid_valid", "sid_test")[int(k)]].append(entry(rel))
    trials = []
    with open(os.path.join(root, "veri_test.txt")) as f:
        for line in f:
            if line.strip():
                label, a, b = line.split()
                trials.append((a, b, int(label)))
    test_files = sorted({a for a, _, _ in trials} | {b for _, b, _ in trials})
    test_speakers = {r.split("/")[0] for r in test_files}
    dev = sorted(os.path.relpath(p, wav) for p in glob.glob(os.path.join(wav, "id*", "*", "*.wav")))
    dev = [r for r in dev if r.split("/")[0] not in test_speakers]
    out["asv_train"] = [entry(r) for k, r in enumerate(dev) if k % 20 != 0]
    out["asv_valid"] = [entry(r) for k, r in enumerate(dev) if k % 20 == 0]
    out["asv_test"] = [entry(r) for r in test_files]
    out["_trials"] = [{"split": "asv_test", "enroll": entry(a)["id"], "test": entry(b)["id"], "target": t}
                      for a, b, t in trials]
    return out


def fluent_speech_commands(root: str) -> Entries:
    """Fluent Speech Commands: `root/data/{train,valid,test}_data.csv` (path, speakerId,
    transcription, action, object, location), paths relative to `root`."""
    out: Entries = {}
    for split in ("train", "valid", "test"):
        path = os.path.join(root, "data", f"{split}_data.csv")
        _require(path, "Fluent Speech Commands csv")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        missing = {"path", "action", "object", "location"} - set(rows[0] if rows else {})
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        out[split] = [_base(id=os.path.splitext(os.path.basename(r["path"]))[0], path=os.path.join(root, r["path"]),
                            speaker=r.get("speakerId"), text=r.get("transcription", ""), task="intent",
                            intent={"action": r["action"], "object": r["object"], "location": r["location"]})
                      for r in rows]
    return out


_IEMOCAP_LINE = re.compile(r"^\[[\d.]+ - [\d.]+\]\t(\S+)\t(\S+)\t")


def iemocap(root: str, test_session: int = 1, valid_fraction: float = 0.1) -> Entries:
    """IEMOCAP, 4 classes (neutral, happy incl. excited, angry, sad), leave one session out.

    `test_session` is the held-out session (1-5); the other sessions give train and a
    deterministic `valid_fraction` of them (by utterance-id hash) valid.
    The emotion goes into the `style` field that the ER task reads.
    """
    out: Entries = {"train": [], "valid": [], "test": []}
    for s in range(1, 6):
        sess = os.path.join(root, f"Session{s}")
        if not os.path.isdir(sess):
            continue
        for lab in sorted(glob.glob(os.path.join(sess, "dialog", "EmoEvaluation", "*.txt"))):
            with open(lab, encoding="utf-8", errors="replace") as f:
                for line in f:
                    m = _IEMOCAP_LINE.match(line)
                    if not m or m.group(2) not in IEMOCAP_CLASSES:
                        continue
                    uid = m.group(1)
                    dialog = uid.rsplit("_", 1)[0]
                    path = os.path.join(sess, "sentences", "wav", dialog, uid + ".wav")
                    if not os.path.exists(path):
                        log.warning("IEMOCAP: missing %s", path)
                        continue
                    e = _base(id=uid, path=path, speaker=uid[:5] + uid.split("_")[-1][0], text=None,
                              style=IEMOCAP_CLASSES[m.group(2)])
                    if s == test_session:
                        out["test"].append(e)
                    elif zlib.crc32(uid.encode()) % 1000 < valid_fraction * 1000:
                        out["valid"].append(e)
                    else:
                        out["train"].append(e)
    for split, entries in out.items():
        if not entries:
            raise ValueError(f"IEMOCAP under {root} (test session {test_session}): split {split!r} is empty")
    return out


READERS: dict[str, Callable[..., Entries]] = {
    "librispeech": librispeech,
    "speech_commands": speech_commands,
    "voxceleb1": voxceleb1,
    "fluent_speech_commands": fluent_speech_commands,
    "iemocap": iemocap,
}


def _label(entry: dict[str, Any]) -> str | None:
    """The class an utterance-classification task reads (keyword or emotion), if any."""
    if entry.get("task") == "keyword" and entry.get("keyword") is not None:
        return str(entry["keyword"])
    return None if entry.get("style") is None else str(entry["style"])


def prepare(reader: str, root: str, out_dir: str, **kwargs) -> str:
    """Writes a reader's splits as a shard folder (once; reused when complete).

    `out_dir/prepare.json` records the reader, the absolute root and the keyword arguments; an
    existing folder prepared from anything else is refused, never silently reused. It also
    holds per split the utterances written (`utterances`), the class counts of keyword and
    emotion labels (`class_counts`, for class-balanced sampling), the reader's own figures
    (`reader_stats`, e.g. out-of-lexicon counts) and the skipped files (unreadable or empty).
    """
    from ssl_jax.data.shards import ShardWriter

    if reader not in READERS:
        raise KeyError(f"unknown reader {reader!r}; readers: {sorted(READERS)}")
    key = {"reader": reader, "root": os.path.abspath(root), "kwargs": json.loads(json.dumps(kwargs))}
    done = os.path.join(out_dir, "prepare.json")
    if os.path.exists(done):
        with open(done) as f:
            old = json.load(f)
        found = {"reader": old.get("reader"), "root": os.path.abspath(old.get("root", "")), "kwargs": old.get("kwargs")}
        if found != key:
            raise ValueError(f"{out_dir} was prepared from {found}, not {key}; delete it or choose another folder")
        return out_dir
    entries = READERS[reader](root, **kwargs)
    trials = entries.pop("_trials", [])
    stats = entries.pop("_stats", {})
    os.makedirs(out_dir, exist_ok=True)
    skipped: list[str] = []
    counts: dict[str, int] = {}
    classes: dict[str, dict[str, int]] = {}
    for split, items in entries.items():
        written = 0
        labels: dict[str, int] = {}
        with ShardWriter(out_dir, split, encoding="flac") as w:
            for e in items:
                loaded = load_audio(e["path"], min_samples=1)  # the skip rules of `prepare`
                audio = loaded.audio
                if audio is not None and "start" in e:
                    audio = audio[e["start"]:e["stop"]]  # a range at 16 kHz, after resampling
                if audio is None or audio.size == 0:
                    skipped.append(f"{e['path']}\t{loaded.reason or 'empty'}: {loaded.detail or 'empty range'}")
                    continue
                w.add(audio, {k: v for k, v in e.items() if k not in ("path", "start", "stop", "source_rate")})
                written += 1
                label = _label(e)
                if label is not None:
                    labels[label] = labels.get(label, 0) + 1
        counts[split] = written
        if labels:
            classes[split] = dict(sorted(labels.items()))
    by_split: dict[str, list[str]] = {}
    for t in trials:
        by_split.setdefault(t["split"], []).append(f"{t['enroll']}\t{t['test']}\t{t['target']}")
    for split, lines in by_split.items():
        with open(os.path.join(out_dir, f"{split}.trials.tsv"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(done, "w") as f:
        json.dump({**key, "utterances": counts, "class_counts": classes, "reader_stats": stats,
                   "skipped": len(skipped), "skipped_files": skipped}, f, indent=1)
    if skipped:
        log.warning("%s: skipped %d unreadable or empty files (see %s)", reader, len(skipped), done)
    return out_dir


def read_trials(shard_dir: str, split: str, ids: list[str]) -> np.ndarray | None:
    """Official trials of a split as [trials, 3] (row i, row j, target), or None if absent."""
    path = os.path.join(shard_dir, f"{split}.trials.tsv")
    if not os.path.exists(path):
        return None
    row = {u: i for i, u in enumerate(ids)}
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                a, b, t = line.split("\t")
                if a in row and b in row:
                    out.append((row[a], row[b], int(t)))
    return np.array(out, np.int64)
