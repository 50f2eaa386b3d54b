"""Tests for the in-process eSpeak NG binding."""

import numpy as np
import pytest

from ssl_jax.data import espeak
from ssl_jax.data.espeak import Espeak, EspeakError, Prosody, render, split_ipa

S = espeak._SEP


def test_split_ipa_rule():
    raw = f"tʃ{S}ˈɜː{S}tʃ dʒ{S}ˈʌ{S}dʒ{S}ᵻ{S}z {S}ˌaɪ{S}{S}ː b{S}ɔ̃"
    assert split_ipa(raw) == ["tʃ", "ɜː", "tʃ", "dʒ", "ʌ", "dʒ", "ᵻ", "z", "aɪː", "b", "ɔ̃"]
    assert split_ipa("") == []
    assert split_ipa(f"ˈ{S} ‿") == []


def test_phonemes_from_espeak():
    with Espeak() as es:
        phones = es.phonemes("church judge, the kitchen", "en-us")
        assert phones[:3] == ["tʃ", "ɜː", "tʃ"]
        assert "dʒ" in phones and "ð" in phones
        assert all(p and " " not in p and "ˈ" not in p and "ˌ" not in p for p in phones)
        # The language matters: German rules give German phones.
        assert "ʃ" in es.phonemes("Schnee", "de")


def test_render_is_reproducible_regardless_of_history():
    text = "turn on the lights in the kitchen"
    a, sr, phones = render(text, "en-us+f3", Prosody(rate=170), seed=3)
    render("something else entirely, to change the engine state", "de+m1", seed=9)
    b, _, _ = render(text, "en-us+f3", Prosody(rate=170), seed=3)
    assert sr == 22050 and a.dtype == np.int16
    assert a.shape[0] > sr  # more than a second of speech
    assert np.array_equal(a, b)
    assert "k" in phones


def test_prosody_changes_the_audio():
    text = "the quick brown fox jumps over the lazy dog"
    slow, _, _ = render(text, "en-us", Prosody(rate=110), seed=0, phonemes=False)
    fast, _, _ = render(text, "en-us", Prosody(rate=260), seed=0, phonemes=False)
    quiet, _, _ = render(text, "en-us", Prosody(volume=40), seed=0, phonemes=False)
    loud, _, _ = render(text, "en-us", Prosody(volume=140), seed=0, phonemes=False)
    assert slow.shape[0] > 1.6 * fast.shape[0]
    rms = lambda x: np.sqrt(np.mean(x.astype(np.float64) ** 2))
    assert rms(loud) > 2.0 * rms(quiet)


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(EspeakError, match="unknown espeak voice 'xx-nowhere'"):
        espeak.check_voice("xx-nowhere")
    with pytest.raises(EspeakError, match="unknown espeak voice variant 'no-such-variant'"):
        render("hello", "en-us+no-such-variant")
