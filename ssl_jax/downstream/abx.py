"""Across-speaker ABX discrimination of frame representations (ZeroSpeech / Libri-light style).

A triplet (A, B, X) has A and B spoken by one speaker and X by another; A and X share a
label (a word, or the centre phone of a triphone), B has another label, and all three share
a context (the neighbouring phones; one context for words). The triplet is an error when X
is not closer to A than to B: d(A, X) >= d(B, X), ties counted as errors (Libri-light counts
a tie as half an error). d is dynamic time warping over frame distances, divided by the
number of cells on the optimal path (Schatz et al., 2013, "Evaluating speech features with
the minimal-pair ABX task"; Versteegh et al., 2015, the Zero Resource Speech Challenge;
Kahn et al., 2020, Libri-Light). Errors are averaged as Libri-light averages its "across"
score: over the triplets of a cell (context, label A, label B, speaker A, speaker X), then
over contexts and X speakers, then over A speakers, then over (label A, label B) pairs.

Conventions:
    * Frame distance: "angular" (default, Libri-light's "cosine" mode) is arccos(cos) / pi
      in [0, 1]; "cosine" is 1 - cos in [0, 2]. Frames are L2-normalised; a zero frame has
      cosine 0 with everything.
    * DTW steps (i-1, j), (i, j-1), (i-1, j-1); every cell's distance is added once; among
      equal-cost predecessors the diagonal wins, then (i, j-1), then (i-1, j) (the order of
      Libri-light's back-trace), which fixes the path length used for the normalisation.
    * Frames: at `frame_rate` Hz a frame t stands for samples [t * hop, (t + 1) * hop),
      hop = 16000 / frame_rate, i.e. its centre is (t + 1/2) * hop. An item [start, end)
      takes the frames whose centre lies in it (Libri-light's rule); an item with no such
      frame takes the one frame nearest its midpoint, so every item has >= 1 frame.
    * Layer choice: labels are split into a dev and a test half (by seed), triplets are
      drawn inside each half, the layer with the lowest dev error is scored on the test half.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ssl_jax.data.shards import SAMPLE_RATE

DISTANCES = ("angular", "cosine")
UNITS = ("x", "label", "context", "speaker")
SILENCES = frozenset({"", "sil", "sp", "spn", "SIL", "SP", "SPN", "<sil>", "_"})
NUM_RESAMPLES = 1000
FOLDER_SPLIT = "abx_words"
_AUDIO_EXTENSIONS = (".wav", ".flac")
# Seed-stream tags, so that the label split, the triplets and the resamples never share draws.
_SPLIT, _DEV, _TEST, _BOOT = 1, 2, 3, 4


# --------------------------------------------------------------------------- items

@dataclasses.dataclass(frozen=True)
class Item:
    """One ABX item: samples [start, end) of utterance `utt` (its record index in the split)."""

    utt: int
    start: int
    end: int
    label: str
    context: str
    speaker: str

    def __post_init__(self):
        if not 0 <= self.start < self.end:
            raise ValueError(f"item of utterance {self.utt} spans samples [{self.start}, {self.end}); "
                             "it needs 0 <= start < end")


def _word_label(text: str) -> str:
    return " ".join(str(text).casefold().split())


def word_items(manifest: Sequence[Mapping[str, Any]]) -> list[Item]:
    """Whole-utterance items of the isolated words (`task == "word"`) of a split's manifest.

    The label is the case-folded `text`; every word shares one (empty) context.
    """
    items = []
    for i, e in enumerate(manifest):
        if e.get("task") != "word":
            continue
        missing = [k for k in ("text", "speaker", "num_samples") if e.get(k) in (None, "")]
        if missing:
            raise ValueError(f"word utterance {e.get('id', i)!r} lacks {missing}")
        items.append(Item(i, 0, int(e["num_samples"]), _word_label(e["text"]), "", str(e["speaker"])))
    if not items:
        raise ValueError("the manifest holds no isolated words (entries with task == 'word')")
    return items


def triphone_items(manifest: Sequence[Mapping[str, Any]], min_phone_samples: int = 160,
                   silences: frozenset[str] = SILENCES) -> list[Item]:
    """Triphone items cut from the phone alignments of a split's manifest.

    Each phone with a previous and a next phone in the same utterance gives an item from the
    start of the previous phone to the end of the next one; label = the centre phone,
    context = "previous+next". Phones named in `silences` are neither centres nor contexts,
    and centre phones shorter than `min_phone_samples` (10 ms by default) are left out.

    Args:
        manifest: entries with `speaker`, `num_samples` and `alignment = {"phones":
            [[phone, start, end], ...], ...}` (samples at 16 kHz); entries without an
            alignment are passed over.
    """
    items = []
    for i, e in enumerate(manifest):
        ali = e.get("alignment")
        if not ali:
            continue
        name = e.get("id", i)
        if not isinstance(ali, Mapping) or not isinstance(ali.get("phones"), (list, tuple)):
            raise ValueError(f"utterance {name!r}: alignment must be a dict with a 'phones' list")
        if e.get("speaker") in (None, ""):
            raise ValueError(f"utterance {name!r} has an alignment but no speaker")
        total = e.get("num_samples")
        phones = []
        for k, p in enumerate(ali["phones"]):
            try:
                label, start, end = p
                start, end = int(start), int(end)
            except (TypeError, ValueError):
                raise ValueError(f"utterance {name!r}: phone {k} is {p!r}, "
                                 "expected [phone, start, end]") from None
            if not 0 <= start <= end or (total is not None and end > int(total)):
                raise ValueError(f"utterance {name!r}: phone {k} {p!r} lies outside [0, {total}] "
                                 "or ends before it starts")
            if phones and start < phones[-1][2]:
                raise ValueError(f"utterance {name!r}: phone {k} starts before phone {k - 1} ends")
            phones.append((str(label), start, end))
        for (prev, p0, _), (cur, c0, c1), (nxt, _, n1) in zip(phones, phones[1:], phones[2:]):
            if {prev, cur, nxt} & silences or c1 - c0 < min_phone_samples:
                continue
            items.append(Item(i, p0, n1, cur, f"{prev}+{nxt}", str(e["speaker"])))
    if not items:
        raise ValueError("the manifest holds no triphones (no entry with an 'alignment' of "
                         ">= 3 consecutive non-silent phones)")
    return items


def frame_range(item: Item, num_frames: int, frame_rate: float) -> tuple[int, int]:
    """Frames [t0, t1) of an item in its utterance's `num_frames` frames (see the module doc)."""
    if num_frames <= 0:
        raise ValueError(f"utterance {item.utt} has no frames")
    hop = SAMPLE_RATE / frame_rate
    t0 = max(0, math.ceil(item.start / hop - 0.5))
    t1 = min(num_frames, math.ceil(item.end / hop - 0.5))
    if t1 <= t0:
        t = min(max(int(0.5 * (item.start + item.end) // hop), 0), num_frames - 1)
        return t, t + 1
    return t0, t1


# --------------------------------------------------------------------------- user folders

def folder_dataset(root: str, out_dir: str, *, min_seconds: float = 0.1) -> str:
    """Writes recordings laid out as `root/SPEAKER/WORD.wav` (or .flac) as a shard split.

    Audio is made mono 16 kHz (averaged channels, soxr resampling); unreadable, empty,
    non-finite or too short files are skipped. The split is `abx_words`; its manifest has
    `task = "word"`, `text` (the file name's stem), `speaker` (the folder). The counts are
    written to `out_dir/abx_words.prepare.json` and skipped files listed there.

    Returns:
        out_dir.

    Raises:
        FileNotFoundError: `root` is not a folder.
        ValueError: fewer than 2 speakers with usable audio, or no word spoken by 2 of them.
    """
    from ssl_jax.data.prepare import load_audio
    from ssl_jax.data.shards import ShardWriter

    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder (expected ROOT/SPEAKER/WORD.wav)")
    files = []
    for speaker in sorted(os.listdir(root)):
        folder = os.path.join(root, speaker)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith(_AUDIO_EXTENSIONS) and os.path.isfile(os.path.join(folder, name)):
                files.append((speaker, os.path.splitext(name)[0], os.path.join(folder, name)))
    min_samples = max(1, int(round(min_seconds * SAMPLE_RATE)))
    usable, skipped = [], []
    notes: collections.Counter[str] = collections.Counter()
    for speaker, word, path in files:
        res = load_audio(path, min_samples)
        if res.audio is None:
            skipped.append({"path": path, "reason": res.reason, "detail": res.detail})
            continue
        notes.update(res.notes)
        usable.append((speaker, word, path, res.audio))
    speakers_of = collections.defaultdict(set)
    for speaker, word, _, _ in usable:
        speakers_of[_word_label(word)].add(speaker)
    speakers = {s for s, *_ in usable}
    why = (f"{root}: {len(files)} audio files in ROOT/SPEAKER/WORD.wav layout, {len(usable)} usable "
           f"(skipped: {dict(collections.Counter(s['reason'] for s in skipped))})")
    if len(speakers) < 2:
        raise ValueError(f"{why}; across-speaker ABX needs >= 2 speakers, found {sorted(speakers)}")
    if not any(len(s) >= 2 for s in speakers_of.values()):
        raise ValueError(f"{why}; no word is spoken by 2 speakers (words: {sorted(speakers_of)})")
    with ShardWriter(out_dir, FOLDER_SPLIT) as w:
        for speaker, word, path, audio in usable:
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            w.add(audio, {"id": rel, "speaker": speaker, "text": word, "task": "word", "source": rel})
    summary = {"root": root, "candidates": len(files), "written": len(usable),
               "skipped": dict(collections.Counter(s["reason"] for s in skipped)),
               "downmixed": notes["downmixed"], "resampled": notes["resampled"],
               "speakers": len(speakers), "words": len(speakers_of), "skipped_files": skipped}
    with open(os.path.join(out_dir, f"{FOLDER_SPLIT}.prepare.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    return out_dir


# --------------------------------------------------------------------------- triplets

@dataclasses.dataclass(frozen=True)
class Triplets:
    """Sampled triplets.

    Attributes:
        abx: [triplets, 3] item indices (a, b, x).
        num_possible: how many triplets the items allow.
        num_cells: how many (context, label A, label B, speaker A, speaker X) cells hold one.
    """

    abx: np.ndarray
    num_possible: int
    num_cells: int


def make_triplets(items: Sequence[Item], max_triplets: int, seed: int) -> Triplets:
    """Up to `max_triplets` distinct triplets, balanced over cells, the same for the same seed.

    A cell is (context, label A, label B, speaker A, speaker X). Every cell gets up to k
    triplets, with the largest k that keeps the total within `max_triplets`; the budget left
    over goes one triplet each to cells picked at random among those holding more. When
    there are more cells than the budget, `max_triplets` cells are picked uniformly and get
    one triplet each. Triplets inside a cell are drawn without replacement.
    """
    if max_triplets <= 0:
        raise ValueError(f"max_triplets must be positive, got {max_triplets}")
    empty = Triplets(np.zeros((0, 3), np.int64), 0, 0)
    if not items:
        return empty
    rng = np.random.default_rng(seed)
    # Groups of items sharing (context, label, speaker), in sorted key order.
    by_key = collections.defaultdict(list)
    for i, it in enumerate(items):
        by_key[(it.context, it.label, it.speaker)].append(i)
    keys = sorted(by_key)
    members = [np.array(by_key[k], np.int64) for k in keys]
    size = np.array([len(m) for m in members], np.int64)
    # B partners of group g: groups of the same (context, speaker); X partners: same (context, label).
    peers_b, peers_x = collections.defaultdict(list), collections.defaultdict(list)
    for g, (c, lab, spk) in enumerate(keys):
        peers_b[(c, spk)].append(g)
        peers_x[(c, lab)].append(g)
    lists_b, lists_x = list(peers_b.values()), list(peers_x.values())
    flat_b = np.concatenate([np.array(v, np.int64) for v in lists_b])
    flat_x = np.concatenate([np.array(v, np.int64) for v in lists_x])
    start_b = np.cumsum([0] + [len(v) for v in lists_b])[:-1]
    start_x = np.cumsum([0] + [len(v) for v in lists_x])[:-1]
    list_b, pos_b = np.zeros(len(keys), np.int64), np.zeros(len(keys), np.int64)
    list_x, pos_x = np.zeros(len(keys), np.int64), np.zeros(len(keys), np.int64)
    for n, v in enumerate(lists_b):
        list_b[v], pos_b[v] = n, np.arange(len(v))
    for n, v in enumerate(lists_x):
        list_x[v], pos_x[v] = n, np.arange(len(v))
    len_b = np.array([len(v) for v in lists_b], np.int64)[list_b] - 1
    len_x = np.array([len(v) for v in lists_x], np.int64)[list_x] - 1
    items_b = np.array([size[v].sum() for v in lists_b], np.int64)[list_b] - size
    items_x = np.array([size[v].sum() for v in lists_x], np.int64)[list_x] - size
    num_possible = int(sum(int(a) * int(b) * int(x) for a, b, x in zip(size, items_b, items_x)))
    cells_per_group = len_b * len_x
    num_cells = int(cells_per_group.sum())
    if num_cells == 0:
        return Triplets(empty.abx, num_possible, 0)

    def decode(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell indices -> (group A, group B, group X)."""
        ends = np.cumsum(cells_per_group)
        g = np.searchsorted(ends, cell, side="right")
        r = cell - (ends[g] - cells_per_group[g])
        b, x = r // len_x[g], r % len_x[g]
        b, x = b + (b >= pos_b[g]), x + (x >= pos_x[g])  # skip group A itself
        return g, flat_b[start_b[list_b[g]] + b], flat_x[start_x[list_x[g]] + x]

    if num_cells >= max_triplets:
        cells = np.sort(rng.choice(num_cells, size=max_triplets, replace=False))
        ga, gb, gx = decode(cells)
        take = np.ones(len(cells), np.int64)
    else:
        ga, gb, gx = decode(np.arange(num_cells))
        sizes = size[ga] * size[gb] * size[gx]
        # Largest per-cell cap k with sum(min(size, k)) <= budget, then the remainder at random.
        lo, hi = 1, int(sizes.max())
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if np.minimum(sizes, mid).sum() <= max_triplets:
                lo = mid
            else:
                hi = mid - 1
        take = np.minimum(sizes, lo)
        left = max_triplets - int(take.sum())
        fuller = np.flatnonzero(sizes > lo)
        if left > 0 and fuller.size:
            take[rng.choice(fuller, size=min(left, fuller.size), replace=False)] += 1
    # Triplet f in [0, na * nb * nx) of a cell is items (f // (nb * nx), f // nx % nb, f % nx)
    # of its groups A, B, X.
    cell_size = size[ga] * size[gb] * size[gx]
    cell = np.repeat(np.arange(take.size), take)
    starts = np.concatenate([[0], np.cumsum(take)])
    flat = rng.integers(cell_size)[cell]  # right for cells drawing one triplet
    for c in np.flatnonzero(take > 1):
        flat[starts[c]:starts[c + 1]] = rng.choice(cell_size[c], size=take[c], replace=False)
    nb, nx = size[gb][cell], size[gx][cell]
    ia, rest = np.divmod(flat, nb * nx)
    ib, ix = np.divmod(rest, nx)
    group_start = np.concatenate([[0], np.cumsum(size)])
    order = np.concatenate(members)

    def pick(groups: np.ndarray, k: np.ndarray) -> np.ndarray:
        return order[group_start[groups][cell] + k]

    abx = np.stack([pick(ga, ia), pick(gb, ib), pick(gx, ix)], 1)
    return Triplets(abx.astype(np.int64), num_possible, num_cells)


def split_labels(items: Sequence[Item], seed: int, dev_fraction: float = 0.5) -> np.ndarray:
    """[items] bool, True for items whose label falls in the dev half (labels shuffled by seed).

    Dev and test share no label, hence no item and no triplet.
    """
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    labels = sorted({it.label for it in items})
    if len(labels) < 4:
        raise ValueError(f"choosing a layer on a dev half needs >= 4 labels (2 per half, as B's label "
                         f"differs from A's); the items have {len(labels)}: {labels}")
    order = np.random.default_rng([seed, _SPLIT]).permutation(len(labels))
    n_dev = min(len(labels) - 2, max(2, int(round(dev_fraction * len(labels)))))
    dev = {labels[k] for k in order[:n_dev]}
    return np.array([it.label in dev for it in items], bool)


def abx_weights(items: Sequence[Item], abx: np.ndarray) -> np.ndarray:
    """[triplets] weights summing to 1 that make sum(weights * errors) Libri-light's average.

    Average over a cell's triplets, then over (context, speaker X) within (label A, label B,
    speaker A), then over speaker A within (label A, label B), then over label pairs.
    """
    abx = np.asarray(abx, np.int64).reshape(-1, 3)
    if abx.shape[0] == 0:
        return np.zeros(0)
    codes = {}

    def code(values):
        return np.array([codes.setdefault(v, len(codes)) for v in values], np.int64)

    a, b, x = abx.T
    ctx = code([items[i].context for i in a])
    la, lb = code([items[i].label for i in a]), code([items[i].label for i in b])
    sa, sx = code([items[i].speaker for i in a]), code([items[i].speaker for i in x])

    def inverse(*cols):
        return np.unique(np.stack(cols, 1), axis=0, return_inverse=True)[1].reshape(-1)

    cell, mid, pair = inverse(la, lb, sa, ctx, sx), inverse(la, lb, sa), inverse(la, lb)
    n_cell = np.bincount(cell)[cell]
    # Cells per (label pair, speaker A), speakers A per label pair, label pairs overall.
    first_cell = np.unique(cell, return_index=True)[1]
    cells_in_mid = np.bincount(mid[first_cell], minlength=mid.max() + 1)[mid]
    first_mid = np.unique(mid, return_index=True)[1]
    mids_in_pair = np.bincount(pair[first_mid], minlength=pair.max() + 1)[pair]
    num_pairs = pair.max() + 1
    return 1.0 / (n_cell * cells_in_mid * mids_in_pair * num_pairs)


# --------------------------------------------------------------------------- DTW

def _normalised(x: np.ndarray) -> np.ndarray:
    """L2-normalised float32 frames (a zero frame stays zero), `[..., dim]`."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def frame_distances(x: np.ndarray, y: np.ndarray, distance: str = "angular") -> np.ndarray:
    """Frame-to-frame distances.

    Args:
        x: [batch, rows, dim]; y: [batch, cols, dim] (normalised here).

    Returns:
        [batch, rows, cols] float32.
    """
    return _unit_distances(_normalised(x), _normalised(y), distance)


def _unit_distances(x: np.ndarray, y: np.ndarray, distance: str) -> np.ndarray:
    """`frame_distances` of frames that are already L2-normalised float32."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; expected one of {DISTANCES}")
    cos = np.matmul(x, np.swapaxes(y, 1, 2))
    np.clip(cos, -1.0, 1.0, out=cos)
    if distance == "cosine":
        return np.subtract(1.0, cos, out=cos)
    out = np.arccos(cos, out=cos)
    out *= np.float32(1.0 / np.pi)
    return out


def dtw_costs(d: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Path-normalised DTW of padded distance matrices, one anti-diagonal at a time.

    All cells of anti-diagonal k = i + j depend only on diagonals k-1 and k-2, so each step
    is a few vector operations over [batch, R]. Path lengths travel with the costs, taking
    the predecessor the module's tie rule takes.

    Args:
        d: [batch, R, C] frame distances; only d[b, :rows[b], :cols[b]] is read.
        rows, cols: [batch] ints in [1, R] and [1, C].

    Returns:
        [batch] float32: accumulated distance on the optimal path / its number of cells.
    """
    batch, r_max, c_max = d.shape
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    if rows.shape != (batch,) or cols.shape != (batch,) or (rows < 1).any() or (cols < 1).any() \
            or (rows > r_max).any() or (cols > c_max).any():
        raise ValueError(f"lengths must be [{batch}] within [1, {r_max}] and [1, {c_max}]")
    steps = r_max + c_max - 1
    k, i = np.arange(steps)[:, None], np.arange(r_max)[None, :]
    j = k - i
    # skew[b, k, i] = d[b, i, k - i], +inf outside the matrix (the last column of `flat`).
    cells = np.where((j >= 0) & (j < c_max), i * c_max + np.clip(j, 0, c_max - 1), r_max * c_max)
    flat = np.empty((batch, r_max * c_max + 1), np.float32)
    flat[:, :-1] = d.reshape(batch, -1)
    flat[:, -1] = np.inf
    skew = np.take(flat, cells.reshape(-1), axis=1).reshape(batch, steps, r_max)
    # Three rotating diagonals; column 0 is a border (cost +inf, length 0) so that entry
    # i + 1 holds row i and the row above is one entry to the left.
    cost = [np.full((batch, r_max + 1), np.inf, np.float32) for _ in range(3)]
    length = [np.zeros((batch, r_max + 1), np.float32) for _ in range(3)]
    cost[0][:, 1:] = skew[:, 0]
    length[0][:, 1] = 1.0
    best = np.empty((batch, r_max), np.float32)
    best_len = np.empty((batch, r_max), np.float32)
    mask = np.empty((batch, r_max), bool)
    last_k, last_i = rows + cols - 2, rows  # the end cell, as a diagonal and a bordered index
    out_cost = np.where(last_k == 0, skew[:, 0, 0], np.float32(0)).astype(np.float32)
    out_len = np.ones(batch, np.float32)
    order = np.argsort(last_k, kind="stable")
    ends = np.searchsorted(last_k[order], np.arange(steps + 1))
    for kk in range(1, steps):
        c1, c2, c = cost[(kk - 1) % 3], cost[(kk - 2) % 3], cost[kk % 3]
        p1, p2, p = length[(kk - 1) % 3], length[(kk - 2) % 3], length[kk % 3]
        # From (i, j-1) ("left") unless (i-1, j) ("up") is cheaper; the diagonal when <= both.
        np.less_equal(c1[:, 1:], c1[:, :-1], out=mask)
        np.copyto(best, c1[:, :-1])
        np.copyto(best, c1[:, 1:], where=mask)
        np.copyto(best_len, p1[:, :-1])
        np.copyto(best_len, p1[:, 1:], where=mask)
        np.less_equal(c2[:, :-1], best, out=mask)
        np.copyto(best, c2[:, :-1], where=mask)
        np.copyto(best_len, p2[:, :-1], where=mask)
        np.add(skew[:, kk], best, out=c[:, 1:])
        np.add(best_len, np.float32(1), out=p[:, 1:])
        done = order[ends[kk]:ends[kk + 1]]
        if done.size:
            out_cost[done] = c[done, last_i[done]]
            out_len[done] = p[done, last_i[done]]
    return out_cost / out_len


def dtw_batch(x: np.ndarray, y: np.ndarray, x_lengths: np.ndarray, y_lengths: np.ndarray,
              distance: str = "angular") -> np.ndarray:
    """Path-normalised DTW between padded frame sequences.

    Args:
        x: [batch, rows, dim] (the rows of the DTW matrix); y: [batch, cols, dim].
        x_lengths, y_lengths: [batch] valid frames, >= 1.

    Returns:
        [batch] float32 distances.
    """
    return dtw_costs(frame_distances(x, y, distance), x_lengths, y_lengths)


def _chunks(lengths: np.ndarray, pairs: np.ndarray, dim: int, max_floats: int = 1 << 22) -> list[np.ndarray]:
    """Pair ids in groups of similar lengths whose padded arrays hold <= max_floats values."""
    r_len, c_len = lengths[pairs[:, 0]], lengths[pairs[:, 1]]
    order = np.lexsort((c_len, r_len))
    out, start = [], 0
    while start < order.size:
        stop = start + 1
        r_pad = c_pad = 0
        while stop <= order.size:
            r_pad = max(r_pad, int(r_len[order[stop - 1]]))
            c_pad = max(c_pad, int(c_len[order[stop - 1]]))
            n = stop - start
            if n > 1 and n * max((r_pad + c_pad) * r_pad, (r_pad + c_pad) * dim) > max_floats:
                break
            stop += 1
        out.append(order[start:stop - 1])
        start = stop - 1
    return out


def _dtw_pairs(buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, pairs: np.ndarray,
               chunks: Sequence[np.ndarray], distance: str) -> np.ndarray:
    """DTW of item pairs whose normalised frames lie in `buffer [frames, dim]` at
    offsets[i]:offsets[i] + lengths[i]."""
    out = np.zeros(pairs.shape[0], np.float32)
    for ids in chunks:
        ri, ci = pairs[ids, 0], pairs[ids, 1]
        r_pad, c_pad = int(lengths[ri].max()), int(lengths[ci].max())
        x = buffer[offsets[ri, None] + np.minimum(np.arange(r_pad)[None], lengths[ri, None] - 1)]
        y = buffer[offsets[ci, None] + np.minimum(np.arange(c_pad)[None], lengths[ci, None] - 1)]
        out[ids] = dtw_costs(_unit_distances(x, y, distance), lengths[ri], lengths[ci])
    return out


def pair_dtw(frames: Sequence[np.ndarray], pairs: np.ndarray, distance: str = "angular") -> np.ndarray:
    """DTW of item pairs, batched by length.

    Args:
        frames: per item, [frames, dim] (>= 1 frame).
        pairs: [pairs, 2] item indices; the first item gives the rows of the DTW matrix.

    Returns:
        [pairs] float32 path-normalised DTW distances.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    lengths = np.array([np.shape(f)[0] for f in frames], np.int64)
    if (lengths < 1).any():
        raise ValueError("every item needs >= 1 frame")
    if pairs.shape[0] == 0:
        return np.zeros(0, np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    buffer = np.concatenate([_normalised(f) for f in frames])
    return _dtw_pairs(buffer, offsets, lengths, pairs, _chunks(lengths, pairs, buffer.shape[1]), distance)


# --------------------------------------------------------------------------- evaluation

def bootstrap(errors: np.ndarray, weights: np.ndarray, units: np.ndarray, *,
              num_resamples: int = NUM_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Errors recomputed on resamples of units (drawn with replacement); triplet weights stay.

    A resample with unit multiplicities c gives sum_u c_u S_u / sum_u c_u W_u, where
    S_u = sum of weight * error over the unit's triplets and W_u = sum of their weights.
    The resamples depend only on the seed and the number of units, so two upstreams scored
    on the same triplets get the same resamples (paired bootstrap).

    Args:
        errors: [triplets] or [layers, triplets] 0/1 errors.
        weights: [triplets] (`abx_weights`); units: [triplets] unit ids.

    Returns:
        [num_resamples], or [layers, num_resamples].
    """
    num, den = unit_sums(errors, weights, units)
    counts = _resample_counts(den.shape[0], num_resamples, seed)  # [resamples, units]
    return (num @ counts.T) / (counts @ den)


def _resample_counts(num_units: int, num_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _BOOT, num_units])
    counts = rng.multinomial(num_units, np.full(num_units, 1.0 / num_units), size=num_resamples)
    return counts.astype(np.float64)


def unit_sums(errors: np.ndarray, weights: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit sums: S [units] (or [layers, units]) of weight * error, W [units] of weight.

    The error of a set of units is sum(S) / sum(W); units are numbered in sorted id order.
    """
    errors = np.asarray(errors, np.float64)
    inv = np.unique(np.asarray(units), return_inverse=True)[1].reshape(-1)
    n = int(inv.max()) + 1 if inv.size else 0
    den = np.bincount(inv, weights=weights, minlength=n)
    if errors.ndim == 1:
        return np.bincount(inv, weights=weights * errors, minlength=n), den
    return np.stack([np.bincount(inv, weights=weights * e, minlength=n) for e in errors]), den


@dataclasses.dataclass
class AbxResult:
    """ABX errors of one upstream.

    Attributes:
        layer_errors: [layers] error of every layer on all triplets (dev and test).
        dev_errors, test_errors: [layers] errors on each half.
        layer: the layer with the lowest dev error.
        error: its test error (the reported figure).
        interval: 95% percentile bootstrap interval of `error` over test units.
        resamples: [num_resamples] `error` on each bootstrap resample; same seed and
            triplets give the same resamples, so differences between upstreams are paired.
        triplets: [triplets, 3] item indices (a, b, x); is_test: [triplets] bool.
        errors: [layers, triplets] bool, d(A, X) >= d(B, X).
        weights: [triplets] averaging weights, summing to 1 within each half.
        units: [triplets] bootstrap unit id of each triplet; unit: its kind (`UNITS`).
        seed: the seed of the split, the triplets and the resamples.
        num_possible: triplets the dev and test halves allow; num_pairs: DTW pairs per layer.
        seconds: timings ("triplets", "features", "dtw", "total").
    """

    layer_errors: np.ndarray
    dev_errors: np.ndarray
    test_errors: np.ndarray
    layer: int
    error: float
    interval: tuple[float, float]
    resamples: np.ndarray
    triplets: np.ndarray
    is_test: np.ndarray
    errors: np.ndarray
    weights: np.ndarray
    units: np.ndarray
    unit: str
    seed: int
    num_possible: int
    num_pairs: int
    seconds: dict[str, float]

    def test_unit_sums(self, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per test unit (S, W) of a layer (default: the chosen one); error = sum(S) / sum(W)."""
        t = self.is_test
        layer = self.layer if layer is None else layer
        return unit_sums(self.errors[layer, t], self.weights[t], self.units[t])

    def summary(self) -> dict[str, Any]:
        """Plain numbers for results files."""
        return {"error": self.error, "interval": list(self.interval), "layer": self.layer,
                "layer_errors": self.layer_errors.tolist(), "dev_errors": self.dev_errors.tolist(),
                "test_errors": self.test_errors.tolist(), "triplets": int(self.triplets.shape[0]),
                "test_triplets": int(self.is_test.sum()), "possible_triplets": self.num_possible,
                "pairs": self.num_pairs, "unit": self.unit, "seconds": self.seconds}


def _units(items: Sequence[Item], abx: np.ndarray, unit: str) -> np.ndarray:
    """[triplets] int ids of the bootstrap unit: the X item, or its label, context or speaker."""
    if unit == "x":
        return abx[:, 2].copy()
    codes: dict[str, int] = {}
    return np.array([codes.setdefault(getattr(items[i], unit), len(codes)) for i in abx[:, 2]], np.int64)


def dev_test_triplets(items: Sequence[Item], max_triplets: int, seed: int,
                      dev_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """Triplets drawn inside the dev and the test half of the labels (`split_labels`).

    The budget is shared by `dev_fraction`. Returns (abx [triplets, 3] item indices,
    is_test [triplets] bool, number of triplets the two halves allow).
    """
    dev = split_labels(items, seed, dev_fraction)
    n_dev = max(1, round(max_triplets * dev_fraction))
    parts, possible = [], 0
    for name, mask, tag, budget in (("dev", dev, _DEV, n_dev),
                                    ("test", ~dev, _TEST, max(1, max_triplets - n_dev))):
        index = np.flatnonzero(mask)
        trip = make_triplets([items[i] for i in index], budget,
                             int(np.random.default_rng([seed, tag]).integers(1 << 31)))
        if trip.abx.shape[0] == 0:
            raise ValueError(f"the {name} half ({index.size} items, labels "
                             f"{sorted({items[i].label for i in index})}) allows no triplet: ABX needs "
                             "two labels from one speaker, one of them also from another speaker, "
                             "in one context")
        parts.append(index[trip.abx])
        possible += trip.num_possible
    is_test = np.repeat([False, True], [parts[0].shape[0], parts[1].shape[0]])
    return np.concatenate(parts), is_test, possible


def _as_layers(f: Any, utt: int) -> np.ndarray:
    f = np.asarray(f)
    f = f[None] if f.ndim == 2 else f
    if f.ndim != 3 or f.shape[1] == 0:
        raise ValueError(f"features of utterance {utt} have shape {f.shape}; expected [layers, frames, dim]")
    return f


def _layer_frames(fetch: Callable[[int], Any], items: Sequence[Item], used: np.ndarray, frame_rate: float,
                  max_cache_bytes: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer: (layer, layers, frames [total, dim] of the used items, offsets, lengths [items]).

    Utterances are fetched once per pass; a pass holds as many layers as fit in the budget.
    """
    by_utt = collections.defaultdict(list)
    for i in used:
        by_utt[items[i].utt].append(int(i))
    utts = sorted(by_utt)
    first = _as_layers(fetch(utts[0]), utts[0])
    num_layers, dim = first.shape[0], first.shape[2]
    est_frames = sum((items[i].end - items[i].start) * frame_rate / SAMPLE_RATE + 1 for i in used)
    per_pass = max(1, min(num_layers, int(max_cache_bytes // max(1.0, 2 * est_frames * dim * 4))))
    ranges: dict[int, tuple[int, int]] = {}
    lengths = offsets = None
    for l0 in range(0, num_layers, per_pass):
        l1 = min(num_layers, l0 + per_pass)
        cache = {}
        for u in utts:
            f = first if (u == utts[0] and l0 == 0) else _as_layers(fetch(u), u)
            if f.shape[0] != num_layers or f.shape[2] != dim:
                raise ValueError(f"features of utterance {u} have shape {f.shape}; expected "
                                 f"[{num_layers}, frames, {dim}] like utterance {utts[0]}")
            for i in by_utt[u]:
                if l0 == 0:
                    ranges[i] = frame_range(items[i], int(f.shape[1]), frame_rate)
                a, b = ranges[i]
                cache[i] = _normalised(f[l0:l1, a:b])
        first = None
        if lengths is None:
            lengths = np.zeros(len(items), np.int64)
            lengths[used] = [ranges[int(i)][1] - ranges[int(i)][0] for i in used]
            offsets = np.zeros(len(items), np.int64)
            offsets[used] = np.concatenate([[0], np.cumsum(lengths[used])[:-1]])
        for k in range(l1 - l0):
            yield l0 + k, num_layers, np.concatenate([cache[int(i)][k] for i in used]), offsets, lengths


FeatureSource = Callable[[int], np.ndarray] | Mapping[int, np.ndarray] | Sequence[np.ndarray]


def evaluate_abx(features: FeatureSource, frame_rate: float, items: Sequence[Item], *,
                 max_triplets: int = 20_000, seed: int = 0, dev_fraction: float = 0.5,
                 distance: str = "angular", unit: str = "x", num_resamples: int = NUM_RESAMPLES,
                 max_cache_bytes: int = 2 << 30, log: Callable[[str], None] = print) -> AbxResult:
    """Across-speaker ABX error of every layer; a layer chosen on dev and scored on test.

    Args:
        features: utterance index -> [layers, frames, dim] (float16 or float32): a callable,
            a mapping or a list. Each utterance is fetched once per pass; a pass keeps the
            items' frames of as many layers as fit in `max_cache_bytes` (float32).
        frame_rate: frames per second of the features.
        items: the ABX items (`word_items`, `triphone_items`).
        max_triplets: triplet budget, shared between the dev and test halves by `dev_fraction`.
        seed: drives the label split, the triplets and the bootstrap resamples.
        distance: "angular" or "cosine" frame distance.
        unit: bootstrap unit: the X item ("x"), or the X item's label, context or speaker.

    Returns:
        An `AbxResult`.
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; expected one of {DISTANCES}")
    if unit not in UNITS:
        raise ValueError(f"unknown bootstrap unit {unit!r}; expected one of {UNITS}")
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    t_start = time.time()
    fetch = features if callable(features) else features.__getitem__
    abx, is_test, possible = dev_test_triplets(items, max_triplets, seed, dev_fraction)
    triplet_seconds = time.time() - t_start
    used = np.unique(abx)
    distances = pairs = pair_index = chunks = None
    dtw_seconds = 0.0
    for layer, num_layers, buffer, offsets, lengths in _layer_frames(fetch, items, used, frame_rate,
                                                                     max_cache_bytes):
        if pairs is None:
            # Distinct pairs, the shorter item (then the lower index) giving the DTW rows.
            pa = np.concatenate([abx[:, [0, 2]], abx[:, [1, 2]]])
            swap = (lengths[pa[:, 1]] < lengths[pa[:, 0]]) | (
                (lengths[pa[:, 1]] == lengths[pa[:, 0]]) & (pa[:, 1] < pa[:, 0]))
            pa[swap] = pa[swap][:, ::-1]
            pairs, pair_index = np.unique(pa, axis=0, return_inverse=True)
            pair_index = pair_index.reshape(-1)
            chunks = _chunks(lengths, pairs, buffer.shape[1])
            distances = np.zeros((num_layers, pairs.shape[0]), np.float32)
        t0 = time.time()
        distances[layer] = _dtw_pairs(buffer, offsets, lengths, pairs, chunks, distance)
        dtw_seconds += time.time() - t0
    features_seconds = time.time() - t_start - triplet_seconds - dtw_seconds

    n = abx.shape[0]
    d_ax, d_bx = distances[:, pair_index[:n]], distances[:, pair_index[n:]]
    errors = d_ax >= d_bx
    weights = np.zeros(n)
    weights[~is_test] = abx_weights(items, abx[~is_test])
    weights[is_test] = abx_weights(items, abx[is_test])
    dev_errors = errors[:, ~is_test] @ weights[~is_test]
    test_errors = errors[:, is_test] @ weights[is_test]
    layer_errors = errors @ abx_weights(items, abx)
    layer = int(np.argmin(dev_errors))
    units = _units(items, abx, unit)
    resamples = bootstrap(errors[layer, is_test], weights[is_test], units[is_test],
                          num_resamples=num_resamples, seed=seed)
    lo, hi = np.percentile(resamples, [2.5, 97.5])
    seconds = {"triplets": triplet_seconds, "features": features_seconds, "dtw": dtw_seconds,
               "total": time.time() - t_start}
    log(f"  ABX: {n} triplets ({int(is_test.sum())} test) of {possible} possible, {pairs.shape[0]} DTW "
        f"pairs x {num_layers} layers in {dtw_seconds:.1f}s (features {features_seconds:.1f}s); "
        f"layer {layer}: {100 * test_errors[layer]:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]")
    return AbxResult(layer_errors=layer_errors, dev_errors=dev_errors, test_errors=test_errors,
                     layer=layer, error=float(test_errors[layer]), interval=(float(lo), float(hi)),
                     resamples=resamples, triplets=abx, is_test=is_test, errors=errors, weights=weights,
                     units=units, unit=unit, seed=seed, num_possible=possible,
                     num_pairs=int(pairs.shape[0]), seconds=seconds)


def paired_bootstrap(base: AbxResult, other: AbxResult) -> dict[str, float]:
    """Paired comparison of two upstreams' test errors on the same triplets and resamples.

    Returns:
        `delta` (other - base), its 95% interval, and the two-sided p-value: twice the
        smaller share of resampled differences on either side of zero (capped at 1).
    """
    if (base.triplets.shape != other.triplets.shape or not np.array_equal(base.triplets, other.triplets)
            or not np.array_equal(base.is_test, other.is_test) or base.unit != other.unit
            or base.seed != other.seed or base.resamples.shape != other.resamples.shape):
        raise ValueError("a paired comparison needs both results on the same items, triplets, "
                         "bootstrap unit, seed and number of resamples")
    diff = other.resamples - base.resamples
    lo, hi = np.percentile(diff, [2.5, 97.5])
    p = min(1.0, 2.0 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0))))
    return {"delta": other.error - base.error, "interval": (float(lo), float(hi)), "p_value": p}
