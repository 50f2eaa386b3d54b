"""Bootstrap intervals and paired comparisons (ssl_jax/downstream/stats.py)."""

import numpy as np
import pytest

from ssl_jax.downstream import metrics, stats


def test_weighted_eer_equals_eer_of_repeated_trials():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = rng.standard_normal(60) + labels
    w = rng.integers(0, 4, 60)
    repeated = metrics.equal_error_rate(np.repeat(scores, w), np.repeat(labels, w))
    assert metrics.equal_error_rate(scores, labels, weights=w) == pytest.approx(repeated, abs=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        metrics.equal_error_rate(scores, labels, weights=-w)


def test_interval_brackets_the_point_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    small = stats.Mean(rng.binomial(1, 0.7, 100).astype(float))
    large = stats.Mean(rng.binomial(1, 0.7, 2500).astype(float))
    lo, hi = stats.interval(small)
    assert lo <= stats.point(small) <= hi
    # Binomial standard error: 1.96 * sqrt(p(1-p)/n) on each side.
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 100), rel=0.25)
    lo2, hi2 = stats.interval(large)
    assert (hi2 - lo2) < (hi - lo) / 3
    assert stats.interval(small) == stats.interval(small)  # seeded


def test_ratio_is_corpus_level_error_rate():
    r = stats.Ratio(np.array([1.0, 0.0, 3.0]), np.array([10.0, 5.0, 5.0]))
    assert stats.point(r) == pytest.approx(4 / 20)


def test_eer_resamples_utterances_not_trials():
    rng = np.random.default_rng(0)
    spk = np.repeat(np.arange(10), 4)
    emb = rng.standard_normal((10, 8))[spk] + 0.8 * rng.standard_normal((40, 8))
    i, j = np.triu_indices(40, 1)
    trials = np.stack([i, j, (spk[i] == spk[j]).astype(int)], 1)
    scores = (emb[i] * emb[j]).sum(-1)
    m = stats.Eer(trials, scores, units=40)
    assert stats.point(m) == pytest.approx(metrics.equal_error_rate(scores, trials[:, 2]))
    lo, hi = stats.interval(m, num=200)
    assert lo < stats.point(m) < hi and hi - lo > 0.02


def test_paired_comparison_detects_only_real_differences():
    rng = np.random.default_rng(1)
    base = rng.binomial(1, 0.6, 600).astype(float)
    better = base.copy()
    better[rng.choice(np.flatnonzero(base == 0), 60, replace=False)] = 1.0  # +10 points
    same = stats.compare(stats.Mean(base), stats.Mean(base.copy()), lower_is_better=False)
    assert same.better == 0 and same.p_value == 1.0
    up = stats.compare(stats.Mean(base), stats.Mean(better), lower_is_better=False)
    assert up.better == 1 and up.p_value < 0.01 and up.delta == pytest.approx(0.1)
    # For an error rate the same change in the value is a worsening.
    down = stats.compare(stats.Ratio(base, np.ones(600)), stats.Ratio(better, np.ones(600)), lower_is_better=True)
    assert down.better == -1
    # A one-item change on 600 items is noise.
    tiny = base.copy()
    tiny[np.flatnonzero(base == 0)[0]] = 1.0
    assert stats.compare(stats.Mean(base), stats.Mean(tiny), lower_is_better=False).better == 0
    with pytest.raises(ValueError, match="same test units"):
        stats.compare(stats.Mean(base), stats.Mean(base[:10]), lower_is_better=False)


def test_metrics_round_trip_through_arrays(tmp_path):
    ms = {"a": stats.Mean(np.array([1.0, 0.0])), "b": stats.Ratio(np.array([1.0]), np.array([2.0])),
          "c": stats.Eer(np.array([[0, 1, 1], [0, 2, 0]]), np.array([0.9, 0.1]), units=3)}
    arrays = {}
    for k, m in ms.items():
        arrays.update(stats.to_arrays(m, f"t/{k}"))
    np.savez(tmp_path / "u.npz", **arrays)
    loaded = np.load(tmp_path / "u.npz")
    for k, m in ms.items():
        back = stats.from_arrays(loaded, f"t/{k}")
        assert type(back) is type(m) and stats.point(back) == stats.point(m)
