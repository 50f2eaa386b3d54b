"""Downstream metrics: accuracy, token error rates (PER, CER, WER) by edit distance, and EER.

The error rates follow the usual definition (Levenshtein distance summed over the test set,
divided by the number of reference tokens), as SUPERB reports PER and WER; the EER is the
operating point of a verification ROC where false acceptance equals false rejection.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance (substitutions, deletions, insertions all cost 1) of two token
    sequences (strings, or lists of words or phone labels), in RapidFuzz's C++."""
    return int(Levenshtein.distance(ref, hyp))


def error_rate(refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]]) -> float:
    """Corpus-level token error rate: total edit distance / total reference tokens."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("references hold no tokens; the error rate is undefined")
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / total


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """WER over whitespace-separated words."""
    return error_rate([r.split() for r in refs], [h.split() for h in hyps])


def char_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """CER over characters (spaces included)."""
    return error_rate([list(r) for r in refs], [list(h) for h in hyps])


def accuracy(labels: Sequence, predictions: Sequence) -> float:
    """Fraction of exact matches."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.size == 0:
        raise ValueError(f"accuracy needs equal, non-empty shapes; got {labels.shape} and {predictions.shape}")
    return float(np.mean(labels == predictions))


def equal_error_rate(scores: Sequence[float], labels: Sequence[int],
                     weights: Sequence[float] | None = None) -> float:
    """EER of a verification trial list.

    Args:
        scores: [trials] similarity scores, higher = more likely the same speaker.
        labels: [trials] 1 for target (same-speaker) trials, 0 for non-target trials.
        weights: optional [trials] non-negative trial weights (bootstrap multiplicities).

    Returns:
        The error rate where the false-acceptance and false-rejection curves cross,
        interpolated linearly between the two thresholds that bracket the crossing.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D shapes")
    w = np.ones_like(scores) if weights is None else np.asarray(weights, np.float64)
    if w.shape != scores.shape or (w < 0).any():
        raise ValueError(f"weights must be non-negative with shape {scores.shape}, got {w.shape}")
    num_pos, num_neg = float((w * labels).sum()), float((w * ~labels).sum())
    if num_pos == 0 or num_neg == 0:
        raise ValueError("EER needs both target and non-target trials")
    # Sweep thresholds from high to low; ties are crossed together.
    order = np.argsort(-scores, kind="mergesort")
    s, y, w = scores[order], labels[order], w[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(w * y)[last_of_tie]
    fp = np.cumsum(w * ~y)[last_of_tie]
    fnr = np.r_[1.0, 1.0 - tp / num_pos]  # false rejection, threshold above every score first
    fpr = np.r_[0.0, fp / num_neg]  # false acceptance
    diff = fnr - fpr  # non-increasing from 1 to -1
    k = int(np.argmax(diff <= 0))
    if diff[k] == 0:
        return float(fpr[k])
    # Crossing between points k-1 (diff > 0) and k (diff < 0).
    t = diff[k - 1] / (diff[k - 1] - diff[k])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))
