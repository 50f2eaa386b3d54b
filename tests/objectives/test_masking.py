"""Tests for ssl_jax/objectives/masking.py: span statistics, padding, distractor sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.objectives import masking


def _runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[0], row.astype(int), [0]])
    d = np.diff(padded)
    return list(np.flatnonzero(d == -1) - np.flatnonzero(d == 1))


def test_span_mask_statistics_and_padding():
    lengths = jnp.array([400, 250, 37, 400] * 16)
    mask = np.asarray(masking.span_mask(jax.random.key(0), lengths, 420, mask_prob=0.65, mask_length=10, min_masks=2))
    assert mask.shape == (64, 420)
    t = np.arange(420)
    assert not (mask & (t[None, :] >= np.asarray(lengths)[:, None])).any(), "a padding frame was masked"
    for row, length in zip(mask, np.asarray(lengths)):
        assert all(r >= 10 for r in _runs(row[:length])), "a span shorter than mask_length"
        assert row.sum() >= 10  # at least one full span; min_masks=2 spans may overlap
    # Expected masked fraction for p=0.65, M=10: 1 - (1 - M/L)^(pL/M) ~ 1 - e^-0.65 ~ 0.48 (paper: ~49%).
    long_rows = np.asarray(lengths) == 400
    frac = mask[long_rows, :400].mean()
    assert 0.42 < frac < 0.55, frac


def test_span_mask_min_masks_and_determinism():
    lengths = jnp.array([100, 100])
    a = masking.span_mask(jax.random.key(3), lengths, 100, mask_prob=0.0, mask_length=5, min_masks=2)
    b = masking.span_mask(jax.random.key(3), lengths, 100, mask_prob=0.0, mask_length=5, min_masks=2)
    np.testing.assert_array_equal(a, b)
    counts = np.asarray(a).sum(-1)
    assert ((counts >= 5) & (counts <= 10)).all()  # two spans of 5, possibly overlapping
    c = masking.span_mask(jax.random.key(4), lengths, 100, mask_prob=0.0, mask_length=5, min_masks=2)
    assert not np.array_equal(a, c)


def test_span_mask_short_and_empty_utterances():
    mask = np.asarray(masking.span_mask(jax.random.key(1), jnp.array([3, 0, 12]), 16, mask_prob=0.65, mask_length=10, min_masks=2))
    assert mask[1].sum() == 0
    assert mask[0, 3:].sum() == 0 and mask[0].sum() >= 1
    assert mask[2, 12:].sum() == 0 and mask[2].sum() == 10


@pytest.mark.parametrize("num_negatives", [1, 7, 100])
def test_negatives_never_the_positive_and_within_masked(num_negatives):
    lengths = jnp.array([200, 120, 60, 15])
    mask = masking.span_mask(jax.random.key(2), lengths, 210, mask_prob=0.65, mask_length=10, min_masks=2)
    idx, valid = masking.sample_negatives(jax.random.key(5), mask, num_negatives)
    idx, valid, mask = map(np.asarray, (idx, valid, mask))
    assert idx.shape == (4, 210, num_negatives)
    np.testing.assert_array_equal(valid, mask)  # every utterance has >= 2 masked frames here
    b, t = np.nonzero(valid)
    chosen = idx[b, t]
    assert (chosen != t[:, None]).all(), "a distractor equals the positive"
    assert mask[b[:, None], chosen].all(), "a distractor is not a masked frame of the same utterance"
    if num_negatives == 100:
        # Draws cover the other masked frames roughly uniformly.
        row = 0
        others = np.flatnonzero(mask[row])
        hits = np.bincount(idx[row][mask[row]].ravel(), minlength=210)[others]
        assert hits.min() > 0.5 * hits.mean()


def test_cross_negatives_never_self():
    mask = masking.span_mask(jax.random.key(7), jnp.array([50, 40, 30]), 50, mask_prob=0.65, mask_length=5, min_masks=2)
    idx = np.asarray(masking.sample_cross_negatives(jax.random.key(8), mask, 20))
    flat_mask = np.asarray(mask).reshape(-1)
    b, t = np.nonzero(np.asarray(mask))
    own = b * 50 + t
    assert (idx[b, t] != own[:, None]).all()
    assert flat_mask[idx[b, t]].all()
    assert len(np.unique(idx[b, t] // 50)) == 3  # draws reach other utterances


def test_single_masked_frame_is_not_valid():
    mask = jnp.zeros((2, 8), bool).at[0, 3].set(True).at[1, 2:5].set(True)
    _, valid = masking.sample_negatives(jax.random.key(0), mask, 4)
    np.testing.assert_array_equal(np.asarray(valid), np.asarray(mask.at[0, 3].set(False)))
