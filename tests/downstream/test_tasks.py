"""Task registry: names, selection of manifest entries and targets."""

import pytest

from ssl_jax.downstream import tasks

SENTENCE = {"id": "s", "speaker": "v1", "language": "en-us", "text": "Hello, World's end!",
            "phonemes": ["h", "ə", "l", "oʊ"], "task": "sentence", "style": "loud",
            "keyword": None, "intent": None}
GERMAN = dict(SENTENCE, language="de", text="hallo welt")
KEYWORD = dict(SENTENCE, task="keyword", keyword="yes", text="yes", phonemes=["j", "ɛ", "s"])
SILENCE = dict(SENTENCE, task="keyword", keyword="_silence_", text="", phonemes=[])
INTENT = dict(SENTENCE, task="intent", intent={"action": "activate", "object": "lights", "location": "kitchen"})


def test_registry_holds_the_superb_names():
    assert set(tasks.names()) >= {"pr", "ks", "sid", "ic", "er", "asr", "asv"}
    with pytest.raises(KeyError, match="registered tasks"):
        tasks.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(tasks.get("pr"))


def test_selection_and_targets():
    pr, ks, ic, asr, sid, asv, er = (tasks.get(n) for n in ("pr", "ks", "ic", "asr", "sid", "asv", "er"))
    assert pr.select(SENTENCE) and not pr.select(GERMAN) and not pr.select(KEYWORD)
    assert pr.target(SENTENCE) == ["h", "ə", "l", "oʊ"]
    assert ks.select(KEYWORD) and ks.select(SILENCE) and not ks.select(SENTENCE)
    assert ks.target(SILENCE) == ("_silence_",)
    assert ic.select(INTENT) and not ic.select(SENTENCE)
    assert ic.target(INTENT) == ("activate", "lights", "kitchen")
    # PR and ASR read sentences only (as LibriSpeech holds), not commands or keywords.
    assert asr.select(SENTENCE) and not asr.select(GERMAN) and not asr.select(INTENT)
    assert not pr.select(INTENT) and not pr.select(dict(SENTENCE, task="word"))
    assert "".join(asr.target(SENTENCE)) == "hello|world's|end"
    # Silence clips carry no speaker or style information.
    for t in (sid, asv, er):
        assert t.select(SENTENCE) and t.select(KEYWORD) and not t.select(SILENCE)
    assert sid.target(SENTENCE) == ("v1",) and asv.target(SENTENCE) == "v1" and er.target(SENTENCE) == ("loud",)
    assert {t.family for t in (pr, ks, asv)} == {"ctc", "classify", "verify"}
    assert ic.slots == ("action", "object", "location")
    assert ic.lower_is_better_for("acc_action") is False and asr.lower_is_better_for("cer") is True
    assert pr.lower_is_better and asv.lower_is_better and not ks.lower_is_better


def test_normalize_text():
    assert tasks.normalize_text("  It's 5 O'Clock, ok?  ") == "it's o'clock ok"
