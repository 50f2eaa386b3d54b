"""Bootstrap intervals and paired bootstrap comparisons of test metrics.

A test metric is recomputed on resamples of its test *units* (utterances, or groups of
ABX triplets) drawn with replacement (Efron & Tibshirani, 1993). A resample is a vector of
multiplicities `weights [units]`, so every metric only needs a weighted form of itself:
a mean (accuracy), a ratio of sums (error rates: edit distance over reference tokens), or an
EER over trials whose weight is the product of its two utterances' multiplicities (so
utterances, not trials, are resampled). Two upstreams scored on the same units are compared
with the *same* resamples (paired bootstrap, Koehn, 2004): the difference is significant
when fewer than 2.5% of resamples reverse its sign on either side (two-sided p < 0.05).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ssl_jax.downstream import metrics

NUM_RESAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class Mean:
    """Metric = mean of per-unit values (accuracy: values are 0/1)."""

    values: np.ndarray  # [units]

    @property
    def num_units(self) -> int:
        return int(self.values.shape[0])

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """weights: [units] or [resamples, units] -> metric per row."""
        return (weights @ self.values) / np.maximum(weights.sum(-1), 1e-12)


@dataclasses.dataclass(frozen=True)
class Ratio:
    """Metric = sum(num) / sum(den) over units (token error rates, ABX error of groups)."""

    num: np.ndarray  # [units]
    den: np.ndarray  # [units]

    @property
    def num_units(self) -> int:
        return int(self.num.shape[0])

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        return (weights @ self.num) / np.maximum(weights @ self.den, 1e-12)


@dataclasses.dataclass(frozen=True)
class Eer:
    """Metric = EER of trials between units; a trial weighs the product of its units' weights."""

    trials: np.ndarray  # [trials, 3] int (unit i, unit j, target)
    scores: np.ndarray  # [trials]
    units: int

    @property
    def num_units(self) -> int:
        return self.units

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """EER per row of weights; NaN for a resample left without target or non-target trials."""
        w = np.atleast_2d(weights)
        tw = w[:, self.trials[:, 0]] * w[:, self.trials[:, 1]]
        target = self.trials[:, 2].astype(bool)
        out = np.full(tw.shape[0], np.nan)
        for k, row in enumerate(tw):
            if row[target].sum() > 0 and row[~target].sum() > 0:
                out[k] = metrics.equal_error_rate(self.scores, target, weights=row)
        return out if np.ndim(weights) == 2 else out[0]


Metric = Mean | Ratio | Eer
_KINDS = {"mean": Mean, "ratio": Ratio, "eer": Eer}


def to_arrays(metric: Metric, prefix: str) -> dict[str, np.ndarray]:
    """Flat arrays (for `np.savez`) from which `from_arrays` rebuilds the metric."""
    kind = {Mean: "mean", Ratio: "ratio", Eer: "eer"}[type(metric)]
    out = {f"{prefix}/kind": np.array(kind)}
    for field in dataclasses.fields(metric):
        out[f"{prefix}/{field.name}"] = np.asarray(getattr(metric, field.name))
    return out


def from_arrays(arrays: Any, prefix: str) -> Metric:
    cls = _KINDS[str(arrays[f"{prefix}/kind"])]
    kw = {f.name: arrays[f"{prefix}/{f.name}"] for f in dataclasses.fields(cls)}
    if cls is Eer:
        kw["units"] = int(kw["units"])
    return cls(**kw)


def resample_weights(num_units: int, seed: int, num: int = NUM_RESAMPLES) -> np.ndarray:
    """[num, units] multiplicities of `num` bootstrap resamples (the same for the same seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, num_units, 0xB007]))
    return rng.multinomial(num_units, np.full(num_units, 1.0 / num_units), size=num).astype(np.float64)


def interval(metric: Metric, seed: int = 0, num: int = NUM_RESAMPLES, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the metric over its units."""
    values = np.asarray(metric(resample_weights(metric.num_units, seed, num)))
    values = values[np.isfinite(values)]  # resamples where the metric is undefined (tiny EER sets)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def point(metric: Metric) -> float:
    """The metric on the test units themselves (all weights 1)."""
    return float(metric(np.ones(metric.num_units)))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Paired comparison of `other` against `base` on the same units.

    Attributes:
        delta: other - base (metric units).
        p_value: two-sided paired-bootstrap p-value of "no difference".
        better: +1 when `other` is significantly better (p < alpha), -1 significantly worse, 0 otherwise.
    """

    delta: float
    p_value: float
    better: int


def compare(base: Metric, other: Metric, lower_is_better: bool, seed: int = 0,
            num: int = NUM_RESAMPLES, alpha: float = 0.05) -> Comparison:
    """Paired bootstrap: both metrics recomputed on the same resamples of the shared units."""
    if base.num_units != other.num_units:
        raise ValueError(f"paired comparison needs the same test units; got {base.num_units} and {other.num_units}")
    w = resample_weights(base.num_units, seed, num)
    diff = np.asarray(other(w)) - np.asarray(base(w))
    diff = diff[np.isfinite(diff)]
    delta = point(other) - point(base)
    p = float(min(1.0, 2.0 * min(np.mean(diff <= 0.0), np.mean(diff >= 0.0))))
    sign = -1.0 if lower_is_better else 1.0
    better = 0
    if p < alpha and delta != 0.0:
        better = 1 if sign * delta > 0 else -1
    return Comparison(delta=float(delta), p_value=p, better=better)
