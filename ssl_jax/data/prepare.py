"""`python -m ssl_jax.data.prepare`: a folder of wav/flac or a fairseq `.tsv` manifest -> shards.

Sources:
    * a folder, searched recursively for `*.wav` / `*.flac`. In the LibriSpeech layout
      (`speaker/chapter/speaker-chapter-utt.flac` with `speaker-chapter.trans.txt` beside them)
      the manifest also gets `speaker`, `chapter` and `text`; files named after their folder
      (`speaker/speaker_001.wav`) get `speaker`.
    * a fairseq manifest `NAME.tsv` (first line the root folder, then `relpath<TAB>num_samples`);
      a sibling `NAME.wrd` (one transcript per line) or else `NAME.ltr` (letters, `|` between
      words) adds `text`.
Audio is made mono 16 kHz float32: several channels are averaged (counted, with a warning),
other sample rates are resampled with soxr (counted). Unreadable, missing, empty, too short or
non-finite audio is skipped, counted and listed in `OUT/skipped.tsv` (path, reason).
`OUT/prepare.json` holds the summary that is also printed.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from ssl_jax.data.shards import ENCODINGS, SAMPLE_RATE, ShardWriter, read_index

log = logging.getLogger(__name__)

# Chosen by `python benchmarks/bench_loader.py --encodings` on the embedded corpus: int16
# records decode several times faster than FLAC for about a third more disk, and the loader
# decodes every record once per epoch.
DEFAULT_ENCODING = "pcm_s16le"
AUDIO_EXTENSIONS = (".wav", ".flac")
SKIP_REASONS = ("missing", "unreadable", "empty", "non_finite", "too_short")
_MAX_WARNINGS = 10


class NoUsableAudioError(ValueError):
    """The source held no utterance that could be written."""


@dataclasses.dataclass
class Item:
    """One source utterance before reading: its file and the labels found beside it."""

    path: str
    rel: str
    meta: dict[str, Any]


def _speaker_labels(rel: str) -> dict[str, str]:
    """Speaker (and chapter) from the path: `spk/chap/spk-chap-*` (LibriSpeech) or `spk/spk*`."""
    parts = rel.replace(os.sep, "/").split("/")
    stem = os.path.splitext(parts[-1])[0]
    if len(parts) >= 3 and stem.startswith(f"{parts[-3]}-{parts[-2]}-"):
        return {"speaker": parts[-3], "chapter": parts[-2]}
    if len(parts) >= 2 and parts[-2] and stem.startswith(parts[-2]):
        return {"speaker": parts[-2]}
    return {}


def _read_transcripts(folder: str, names: Iterable[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for name in names:
        if not name.endswith(".trans.txt"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            for line in f:
                key, _, text = line.strip().partition(" ")
                if key:
                    texts[key] = text.strip()
    return texts


def _assign_ids(items: list[Item]) -> list[Item]:
    stems = [os.path.splitext(os.path.basename(it.rel))[0] for it in items]
    unique = len(set(stems)) == len(stems)
    for it, stem in zip(items, stems):
        it.meta = dict({"id": stem if unique else os.path.splitext(it.rel)[0]}, **it.meta)
    return items


def scan_folder(root: str) -> list[Item]:
    """Audio files under `root` (sorted), with LibriSpeech speaker/chapter/text when present."""
    items: list[Item] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        texts = _read_transcripts(folder, files)
        for name in sorted(files):
            if not name.lower().endswith(AUDIO_EXTENSIONS):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            meta: dict[str, Any] = _speaker_labels(rel)
            stem = os.path.splitext(name)[0]
            if stem in texts:
                meta["text"] = texts[stem]
            items.append(Item(path, rel, meta))
    return _assign_ids(items)


def _ltr_to_text(line: str) -> str:
    return " ".join("".join(word.split()) for word in line.strip().split("|") if word.strip())


def read_tsv(path: str) -> list[Item]:
    """Entries of a fairseq manifest, with `text` from a sibling `.wrd` or `.ltr` file."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}: empty fairseq manifest (the first line must be the root folder)")
    root = lines[0].strip()
    if not os.path.isabs(root) and not os.path.isdir(root):
        root = os.path.join(os.path.dirname(os.path.abspath(path)), root)
    rows = [line for line in lines[1:] if line.strip()]
    stem = os.path.splitext(path)[0]
    texts: list[str] | None = None
    for ext, convert in ((".wrd", str.strip), (".ltr", _ltr_to_text)):
        if os.path.exists(stem + ext):
            with open(stem + ext, encoding="utf-8") as f:
                texts = [convert(line) for line in f.read().splitlines()]
            if len(texts) != len(rows):
                raise ValueError(f"{stem + ext} has {len(texts)} lines but {path} lists "
                                 f"{len(rows)} files; they must match line by line")
            break
    items = []
    for k, row in enumerate(rows):
        rel = row.split("\t")[0]
        meta: dict[str, Any] = _speaker_labels(rel)
        if texts is not None:
            meta["text"] = texts[k]
        items.append(Item(os.path.join(root, rel), rel, meta))
    return _assign_ids(items)


@dataclasses.dataclass
class Loaded:
    """The outcome of reading one item: audio, or the reason it is skipped."""

    audio: np.ndarray | None
    reason: str | None = None
    detail: str = ""
    notes: tuple[str, ...] = ()


def load_audio(path: str, min_samples: int) -> Loaded:
    """Reads one file as mono 16 kHz float32 `[samples]`, or says why it cannot be used."""
    if not os.path.exists(path):
        return Loaded(None, "missing", "no such file")
    import soundfile as sf  # outside the try: a broken install is an error, not N unreadable files

    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types for broken files
        return Loaded(None, "unreadable", str(e).splitlines()[0] if str(e) else type(e).__name__)
    notes = []
    if audio.shape[0] == 0:
        return Loaded(None, "empty", "0 samples")
    if not np.isfinite(audio).all():
        return Loaded(None, "non_finite", "NaN or inf samples")
    if audio.shape[1] > 1:
        audio = audio.mean(axis=1, keepdims=True)
        notes.append("downmixed")
    audio = audio[:, 0]
    if rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        notes.append("resampled")
    if audio.shape[0] < max(min_samples, 1):  # also a few samples that resample to none
        return Loaded(None, "too_short", f"{audio.shape[0]} samples < {max(min_samples, 1)}")
    if np.abs(audio).max() > 1.0:
        notes.append("clipped")
    return Loaded(np.ascontiguousarray(audio, np.float32), notes=tuple(notes))


def _load_item(args: tuple[str, int]) -> Loaded:
    return load_audio(*args)


def _valid_ids(items: list[Item], fraction: float, seed: int) -> set[str]:
    if fraction <= 0 or not items:
        return set()
    count = min(len(items) - 1, max(1, round(fraction * len(items))))
    chosen = np.random.default_rng(seed).choice(len(items), size=count, replace=False)
    return {items[i].meta["id"] for i in chosen}


def prepare(src: str, out: str, *, split: str = "train", encoding: str = DEFAULT_ENCODING,
            min_seconds: float = 0.5, valid_fraction: float = 0.0, valid_split: str = "valid",
            seed: int = 0, workers: int = 1) -> dict[str, Any]:
    """Writes the usable audio of `src` as shards in `out`; returns the summary.

    Raises:
        FileNotFoundError: `src` does not exist.
        NoUsableAudioError: nothing in `src` could be used (after writing `skipped.tsv`).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if valid_fraction > 0 and valid_split == split:
        raise ValueError(f"the held-out split needs another name than {split!r}")
    if os.path.isdir(src):
        items = scan_folder(src)
    elif os.path.isfile(src) and src.endswith(".tsv"):
        items = read_tsv(src)
    elif os.path.exists(src):
        raise ValueError(f"{src}: expected a folder of wav/flac files or a fairseq .tsv manifest")
    else:
        raise FileNotFoundError(f"{src}: no such folder or manifest")
    if os.path.exists(os.path.join(out, "index.json")):
        held = read_index(out)["encoding"]
        if held != encoding:
            raise ValueError(f"{out} already holds {held} shards; pass --encoding {held} or "
                             "another --out")
    os.makedirs(out, exist_ok=True)
    min_samples = int(round(min_seconds * SAMPLE_RATE))
    valid = _valid_ids(items, valid_fraction, seed)
    writers: dict[str, ShardWriter] = {}
    skipped: list[tuple[str, str, str]] = []
    notes: collections.Counter[str] = collections.Counter()
    warned = 0
    jobs = [(it.path, min_samples) for it in items]
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
        results: Iterable[Loaded] = pool.imap(_load_item, jobs, chunksize=8)
    else:
        pool = None
        results = map(_load_item, jobs)
    try:
        for it, res in zip(items, results):
            if res.audio is None:
                skipped.append((it.path, res.reason or "unreadable", res.detail))
                continue
            for note in res.notes:
                notes[note] += 1
                if note == "downmixed" and warned < _MAX_WARNINGS:
                    warned += 1
                    log.warning("%s: several channels, averaged to mono", it.path)
            name = valid_split if it.meta["id"] in valid else split
            if name not in writers:
                writers[name] = ShardWriter(out, name, encoding=encoding)
            writers[name].add(res.audio, dict(it.meta, source=it.rel))
    finally:
        if pool is not None:
            pool.terminate()
        entries = {name: w.close() for name, w in writers.items()}
        with open(os.path.join(out, "skipped.tsv"), "w", encoding="utf-8") as f:
            f.write("path\treason\n")
            for path, reason, _ in skipped:
                f.write(f"{path}\t{reason}\n")
    by_reason = collections.Counter(reason for _, reason, _ in skipped)
    summary = {
        "source": src, "out": out, "encoding": encoding, "min_seconds": min_seconds,
        "candidates": len(items),
        "splits": {name: {"utterances": e["num_utterances"], "hours": e["hours"]}
                   for name, e in entries.items()},
        "utterances": sum(e["num_utterances"] for e in entries.values()),
        "hours": sum(e["hours"] for e in entries.values()),
        "skipped": dict(sorted(by_reason.items())),
        "downmixed": notes["downmixed"], "resampled": notes["resampled"],
        "clipped": notes["clipped"],
    }
    for path, reason, detail in skipped[:_MAX_WARNINGS]:
        log.warning("skipped %s: %s (%s)", path, reason, detail)
    if not entries:
        raise NoUsableAudioError(
            f"{src}: nothing usable among {len(items)} candidate audio files"
            + (f" (skipped: {dict(by_reason)}; see {os.path.join(out, 'skipped.tsv')})"
               if skipped else " (no .wav/.flac files found)"))
    with open(os.path.join(out, "prepare.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable summary."""
    lines = [f"wrote {summary['utterances']} utterances, {summary['hours']:.3f} h "
             f"({summary['encoding']}) to {summary['out']}"]
    for name, s in summary["splits"].items():
        lines.append(f"  {name}: {s['utterances']} utterances, {s['hours']:.3f} h")
    skipped = summary["skipped"]
    lines.append(f"skipped {sum(skipped.values())}"
                 + (": " + ", ".join(f"{k} {v}" for k, v in skipped.items()) if skipped else ""))
    lines.append(f"downmixed {summary['downmixed']}, resampled {summary['resampled']}, "
                 f"clipped {summary['clipped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_jax.data.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="folder of wav/flac, or a fairseq .tsv")
    parser.add_argument("--out", required=True, help="shard folder to write (or add a split to)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--encoding", choices=ENCODINGS, default=DEFAULT_ENCODING)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--valid-fraction", type=float, default=0.0,
                        help="hold out this fraction of utterances as split 'valid'")
    parser.add_argument("--seed", type=int, default=0, help="seeds the held-out choice")
    parser.add_argument("--workers", type=int, default=1, help="reading/resampling processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = prepare(args.src, args.out, split=args.split, encoding=args.encoding,
                          min_seconds=args.min_seconds, valid_fraction=args.valid_fraction,
                          seed=args.seed, workers=args.workers)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
