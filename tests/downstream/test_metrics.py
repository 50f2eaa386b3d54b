"""Metrics against independent references: jiwer for PER/WER/CER, scikit-learn's ROC for EER."""

import numpy as np
import pytest

from ssl_jax.downstream import metrics


def _random_sentences(rng, n, vocab):
    return [" ".join(rng.choice(vocab, size=rng.integers(1, 12))) for _ in range(n)]


def test_edit_distance_small_cases():
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.edit_distance([], ["a", "b"]) == 2
    assert metrics.edit_distance(["a", "b"], []) == 2
    assert metrics.edit_distance(["a", "b", "c"], ["a", "b", "c"]) == 0


def test_wer_and_cer_match_jiwer():
    jiwer = pytest.importorskip("jiwer")
    rng = np.random.default_rng(0)
    vocab = np.array(["the", "cat", "sat", "on", "a", "mat", "dog", "ran"])
    refs = _random_sentences(rng, 40, vocab)
    # Hypotheses: corrupted references, so that rates are neither 0 nor ~1.
    hyps = []
    for r in refs:
        words = r.split()
        out = []
        for w in words:
            u = rng.random()
            if u < 0.15:
                continue
            out.append(str(rng.choice(vocab)) if u < 0.3 else w)
            if rng.random() < 0.1:
                out.append(str(rng.choice(vocab)))
        hyps.append(" ".join(out) if out else "x")
    assert metrics.word_error_rate(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert metrics.char_error_rate(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
    assert 0.05 < metrics.word_error_rate(refs, hyps) < 0.8


def test_per_matches_jiwer_on_multichar_phones():
    jiwer = pytest.importorskip("jiwer")
    rng = np.random.default_rng(1)
    phones = ["aɪ", "tʃ", "ʃ", "ə", "iː", "k", "t", "ɹ"]
    refs = [list(rng.choice(phones, size=rng.integers(1, 20))) for _ in range(30)]
    hyps = [list(rng.choice(phones, size=rng.integers(1, 20))) for _ in range(30)]
    # jiwer works on words: joining phones by spaces makes each phone one token.
    expected = jiwer.wer([" ".join(r) for r in refs], [" ".join(h) for h in hyps])
    assert metrics.error_rate(refs, hyps) == pytest.approx(expected, abs=1e-12)


def test_error_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="references"):
        metrics.error_rate([["a"]], [["a"], ["b"]])
    with pytest.raises(ValueError, match="no tokens"):
        metrics.error_rate([[]], [["a"]])


def _sklearn_eer(scores, labels):
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_eer_matches_sklearn_roc(seed):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    labels = rng.integers(0, 2, size=n)
    scores = rng.normal(size=n) + labels * rng.uniform(0.3, 2.0)
    if seed == 3:
        scores = np.round(scores, 1)  # ties
    assert metrics.equal_error_rate(scores, labels) == pytest.approx(_sklearn_eer(scores, labels), abs=1e-9)


def test_eer_extremes_and_errors():
    assert metrics.equal_error_rate([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0
    assert metrics.equal_error_rate([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 1.0
    with pytest.raises(ValueError, match="both"):
        metrics.equal_error_rate([0.1, 0.2], [1, 1])


def test_accuracy():
    assert metrics.accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError):
        metrics.accuracy([], [])
