"""Tests for the in-process eSpeak NG binding."""

import ctypes

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


def test_split_ipa_drops_language_switches():
    assert split_ipa(f"ʊ{S}n{S}t (en){S}w{S}ˈɪ{S}n s{S}ˈɒ{S}f{S}t{S}(de)") == \
        ["ʊ", "n", "t", "w", "ɪ", "n", "s", "ɒ", "f", "t"]
    with Espeak() as es:  # espeak switches to English rules for an English word in German
        phones = es.phonemes("und windows Software", "de")
    assert phones and not any("(" in p or ")" in p for p in phones)


def test_event_struct_matches_speak_lib_h():
    """espeak_EVENT on a 64-bit ABI: six 4-byte ints, a pointer, an 8-byte union."""
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("layout figures are for 64-bit platforms")
    ev = espeak._Event
    offsets = {name: getattr(ev, name).offset for name, _ in ev._fields_}
    assert offsets == {"type": 0, "unique_identifier": 4, "text_position": 8, "length": 12,
                       "audio_position": 16, "sample": 20, "user_data": 24, "id": 32}
    assert ctypes.sizeof(ev) == 40 and ctypes.sizeof(espeak._EventId) == 8


def test_events_are_monotone_and_line_up_with_the_text():
    text = "Church judge, a kitchen sat."
    with Espeak() as es:
        audio, events = es.synth_events(text, "en-us", Prosody(rate=170), seed=1)
        phones = es.phonemes(text, "en-us")
    samples = [e.sample for e in events]
    assert samples == sorted(samples) and samples[0] >= 0
    assert 0 <= audio.shape[0] - samples[-1] < 0.05 * es.sample_rate  # last event near the end
    words = [text[e.text_position - 1:e.text_position - 1 + e.length]
             for e in events if e.type == espeak._EVENT_WORD]
    assert words == ["Church", "judge", "a", "kitchen", "sat"]
    named = [espeak._phone_token(e.name) for e in events if e.type == espeak._EVENT_PHONEME]
    assert [p for p in named if p] == phones
    # audio_position is in ms, sample in samples: the two agree.
    for e in events:
        assert e.audio_position <= 1000 * e.sample / es.sample_rate < e.audio_position + 1
    with Espeak() as es:
        _, again = es.synth_events(text, "en-us", Prosody(rate=170), seed=1)
    assert [e.sample for e in again] == samples  # a second call on one engine restarts at 0


def _check_alignment(al, audio, phones, text):
    assert [p for p, _, _ in al.phones] == phones
    end = 0
    for _, s, e in al.phones:
        assert end <= s < e <= audio.shape[0]
        assert np.any(audio[s:e])  # espeak's silence is exact zeros: no phone is silent
        end = e
    assert [w for w, _, _ in al.words] == espeak.text_words(text)
    starts = [s for _, s, _ in al.phones]
    ends = [e for _, _, e in al.phones]
    for _, s, e in al.words:  # a word spans whole phones
        assert s in starts and e in ends and s < e


@pytest.mark.parametrize("text, voice", [
    ("Turn on the lights in the kitchen.", "en-gb-x-gbclan"),  # espeak joins "on the"
    ("Maaliskuussa olleet mikään niistä.", "fi"),  # events lack the length marks
    ("All small wall bells call.", "en-us"),  # sonorants after vowels
    ("Das ist ein Computer und windows Software.", "de"),  # a language switch
    ("Eles não são.", "pt"),  # "ɐ̃ʊ̃" with its stress mark is cut at 8 bytes in the events
    ("Crisi prova parlo.", "it"),  # unnamed events between phones
])
def test_render_aligned(text, voice):
    r = espeak.render_aligned(text, voice, Prosody(rate=180), seed=2)
    audio, _, phones = render(text, voice, Prosody(rate=180), seed=2)
    assert np.array_equal(r.audio, audio) and r.phones == phones
    _check_alignment(r.alignment, r.audio, phones, text)
    if voice == "en-gb-x-gbclan":
        (_, _, on_end), (_, the_start, the_end), (_, lights_start, _) = r.alignment.words[1:4]
        assert on_end <= the_start < the_end <= lights_start


def test_align_rule_on_hand_made_events():
    """Pairing, phones without timing, modifiers, zero trimming and word spans."""
    audio = np.ones(1000, np.int16)
    audio[350:400] = 0  # a closure at the end of "t"
    ev = lambda t, s, name="": espeak.Event(t, 1, 0, s // 22, s, name)
    events = [ev(1, 0), ev(7, 100, "ˈa"), ev(7, 200, "t"), ev(1, 400), ev(7, 400, "ˈo"),
              ev(7, 600, "ʲ"), ev(7, 650, ""), ev(7, 700, "l"), ev(7, 700, "n"), ev(7, 900, ""),
              ev(5, 900)]
    # TextToPhonemes has the length mark that synthesis folded into "a"'s duration.
    phones = ["aː", "t", "oʲ", "l", "n"]
    al = espeak.align(audio, events, phones, [("at", ["a", "t"]), ("oln", ["o", "l", "n"])])
    assert al.phones == (("aː", 100, 200), ("t", 200, 350),  # the closure belongs to no phone
                         # an unnamed event between phones continues "oʲ"; "l" (empty
                         # span) shares the span of the phone before it
                         ("oʲ", 400, 550), ("l", 550, 700),
                         ("n", 700, 900))
    assert al.words == (("at", 100, 350), ("oln", 400, 900))
    mapped = al.mapped(0.5, 10, 400)
    assert mapped.phones[0] == ("aː", 60, 110) and mapped.words[-1] == ("oln", 210, 400)
    assert al.as_dict()["phones"][0] == ["aː", 100, 200]
    assert espeak.align(audio, [], [], []) == espeak.Alignment((), ())


def test_align_silence_and_onset_on_hand_made_events():
    """`silence`: a faint span (an echo tail in a closure) is no timing and faint ends are
    trimmed; `onset`: sound before the first event belongs to the first phone. The defaults
    keep the exact-zero rule."""
    audio = np.full(1000, 1000, np.int16)
    audio[:40] = 0
    audio[40:100] = 400  # sound before the first phoneme event (an initial trill)
    audio[300:400] = 2  # a faint tail where espeak reports "l"
    audio[900:] = 3
    ev = lambda t, s, name="": espeak.Event(t, 1, 0, s // 22, s, name)
    events = [ev(1, 0), ev(7, 100, "r"), ev(7, 200, "a"), ev(7, 300, "l"), ev(7, 400, "t"),
              ev(5, 1000)]
    phones, words = ["r", "a", "l", "t"], [("ralt", ["r", "a", "l", "t"])]
    exact = espeak.align(audio, events, phones, words)
    assert exact.phones == (("r", 100, 200), ("a", 200, 300), ("l", 300, 400), ("t", 400, 1000))
    assert espeak.align(audio, events, phones, words, 0.0, False) == exact
    faint = espeak.align(audio, events, phones, words, silence=0.003)  # 3 of 1000 is silent
    assert faint.phones == (("r", 100, 200), ("a", 200, 250), ("l", 250, 300), ("t", 400, 900))
    both = espeak.align(audio, events, phones, words, silence=0.003, onset=True)
    assert both.phones[0] == ("r", 40, 200) and both.phones[1:] == faint.phones[1:]
    assert both.words == (("ralt", 40, 900),)


def test_variant_files():
    assert espeak.variant_pitch("m1") == (75, 109)
    assert espeak.variant_pitch("f1") == (140, 200)
    assert espeak.variant_pitch("klatt") == espeak.DEFAULT_PITCH == (80, 118)  # no pitch line
    for bad in ("no-such-variant", "../voices/!v/m1", ""):
        with pytest.raises(EspeakError, match="unknown espeak voice variant"):
            espeak.variant_pitch(bad)
