"""Checks of the `alignment` field of synthesised corpora, shared by the corpus tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from ssl_jax.data import sentences
from ssl_jax.data.espeak import text_words

FRAME = 80  # 5 ms at 16 kHz


def check_alignment(entry: dict[str, Any], audio: np.ndarray | None = None) -> bool:
    """Asserts that an entry's alignment is consistent with its labels (and its audio).

    Phones are exactly `phonemes`, in order, non-overlapping, non-empty and inside the clip;
    words are the words of the text and span whole phones. With `audio`, every phone holds
    sound: its loudest 5 ms frame is at least twice the RMS of the noise before the first
    phone (checked when that stretch lasts at least 50 ms). Returns whether the energy was
    checked.
    """
    al = entry["alignment"]
    assert set(al) == {"phones", "words"}, al
    if entry["keyword"] == sentences.SILENCE:
        assert al == {"phones": [], "words": []}
        return False
    phones, words = al["phones"], al["words"]
    assert [p for p, _, _ in phones] == entry["phonemes"], entry["id"]
    end = 0
    for _, s, e in phones:
        assert end <= s < e <= entry["num_samples"], (entry["id"], phones)
        end = e
    assert [w for w, _, _ in words] == text_words(entry["text"]), (entry["text"], words)
    starts, ends = {s for _, s, _ in phones}, {e for _, _, e in phones}
    end = 0
    for _, s, e in words:
        assert s in starts and e in ends and end <= s < e, (entry["id"], words)
        end = e
    if audio is None or phones[0][1] < 10 * FRAME:
        return False
    assert audio.shape[0] == entry["num_samples"]
    floor = np.sqrt(np.mean(np.square(audio[:phones[0][1]], dtype=np.float64)))
    for p, s, e in phones:
        seg = audio[s:e].astype(np.float64)
        n = max(1, seg.shape[0] // FRAME)
        loudest = np.sqrt(np.mean(seg[:n * FRAME].reshape(n, -1) ** 2, axis=1)).max()
        assert loudest > 2.0 * floor, (entry["id"], p, s, e, loudest, floor)
    return True
