"""Tests for the embedded corpus (`ssl_jax/data/synth.py`) and its text generators."""

import collections
import json
import os
import threading

import numpy as np
import pytest

from ssl_jax.data import espeak, sentences, synth
from ssl_jax.data.shards import SAMPLE_RATE, ShardSource, read_index, read_manifest
from tests.data.alignment_checks import check_alignment

FIELDS = {"id", "num_samples", "speaker", "language", "text", "phonemes", "task", "style",
          "keyword", "intent", "alignment"}


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    with open(os.path.join(tiny_corpus, "corpus.json")) as f:
        info = json.load(f)
    manifests = {s: read_manifest(tiny_corpus, s) for s in synth.SPLITS}
    return tiny_corpus, info, manifests


def test_corpus_json_summarises_the_shards(corpus):
    path, info, manifests = corpus
    index = read_index(path)
    assert info["sample_rate"] == index["sample_rate"] == SAMPLE_RATE
    assert set(info["splits"]) == set(index["splits"]) == set(synth.SPLITS)
    total = 0
    for split, m in manifests.items():
        assert info["splits"][split]["utterances"] == len(m) > 0
        assert sum(info["counts"][split]["task"].values()) == len(m)
        assert sum(info["counts"][split]["style"].values()) == len(m)
        assert sum(info["counts"][split]["language"].values()) == len(m)
        total += sum(u["num_samples"] for u in m)
    assert info["hours"] == pytest.approx(total / SAMPLE_RATE / 3600)
    assert info["num_utterances"] == sum(len(m) for m in manifests.values())
    assert info["num_speakers"] == len(info["speakers"])
    assert "not emotions" in info["style_note"]
    assert info["build"]["real_time_factor_per_core"] > 0
    assert info["keywords"] == list(sentences.KEYWORD_LABELS)
    assert info["format"] == synth.FORMAT and info["corpus"] == "pretraining"
    for split, m in manifests.items():
        intents = collections.Counter(
            "/".join(u["intent"][k] for k in ("action", "object", "location"))
            for u in m if u["intent"])
        assert info["counts"][split]["intent"] == dict(intents)


def test_manifest_fields_and_labels(corpus):
    _, info, manifests = corpus
    inventory = set(info["phoneme_inventory"])
    ids = set()
    for split, m in manifests.items():
        for u in m:
            assert set(u) == FIELDS, u
            assert u["id"] not in ids
            ids.add(u["id"])
            assert MIN_OK <= u["num_samples"] / SAMPLE_RATE <= synth.MAX_SECONDS
            assert u["task"] in ("sentence", "keyword", "intent")
            assert u["style"] in synth.STYLES
            assert set(u["phonemes"]) <= inventory
            if u["task"] == "keyword":
                assert u["keyword"] in sentences.KEYWORD_LABELS and u["intent"] is None
                if u["keyword"] in sentences.KEYWORDS:
                    assert u["text"] == u["keyword"]
                if u["keyword"] == sentences.SILENCE:
                    assert u["speaker"] == synth.SILENCE_SPEAKER and u["phonemes"] == []
                    assert split != "test_unseen"
                    continue
            elif u["task"] == "intent":
                labels = sentences.intent_labels()
                assert u["keyword"] is None and u["language"].startswith("en")
                assert {k: u["intent"][k] in labels[k] for k in labels} == dict.fromkeys(labels, True)
            else:
                assert u["keyword"] is None and u["intent"] is None
            assert u["text"] and u["phonemes"]
            assert all(p.strip() == p and p for p in u["phonemes"])
            assert not any(p.startswith("(") for p in u["phonemes"])  # no language switches
            check_alignment(u)


MIN_OK = synth.MIN_SECONDS - 1e-9


def test_speakers_styles_and_splits(corpus):
    _, info, manifests = corpus
    seen = {s["id"] for s in info["speakers"] if s["split"] == "seen"}
    unseen = {s["id"] for s in info["speakers"] if s["split"] == "unseen"}
    assert seen and unseen and not seen & unseen
    train_styles = collections.defaultdict(collections.Counter)
    for u in manifests["train"]:
        train_styles[u["speaker"]][u["style"]] += 1
    for spk in seen:  # enough per speaker and style for speaker identification
        assert set(train_styles[spk]) == set(synth.STYLES), spk
        assert min(train_styles[spk].values()) >= 2, spk
    for split in ("valid", "test"):
        assert {u["speaker"] for u in manifests[split]} <= seen | {synth.SILENCE_SPEAKER}
    assert {u["speaker"] for u in manifests["test_unseen"]} == unseen
    ids_by_split = {s: {u["id"] for u in m} for s, m in manifests.items()}
    assert not ids_by_split["train"] & (ids_by_split["valid"] | ids_by_split["test"])
    assert len({s["language"] for s in info["speakers"]}) >= 9  # English accents + others


def test_styles_are_acoustically_distinct(corpus, tiny_corpus):
    """Loud is louder; fast_high is faster (fewer samples per phone) than slow_low."""
    _, _, manifests = corpus
    source = ShardSource(tiny_corpus, "train")
    rms, per_phone = collections.defaultdict(list), collections.defaultdict(list)
    for i, u in enumerate(source.manifest):
        if u["task"] != "sentence":
            continue
        audio = source[i]["audio"]
        speech = audio[np.abs(audio) > 0.02]
        rms[u["style"]].append(np.sqrt(np.mean(speech**2)))
        per_phone[u["style"]].append(u["num_samples"] / len(u["phonemes"]))
    mean = {k: {s: float(np.median(v[s])) for s in synth.STYLES} for k, v in
            (("rms", rms), ("per_phone", per_phone))}
    assert mean["rms"]["loud"] > 1.5 * mean["rms"]["neutral"]
    assert mean["per_phone"]["slow_low"] > 1.4 * mean["per_phone"]["fast_high"]


def test_alignments_match_the_audio(tiny_corpus):
    """Every phone's stretch of audio holds sound; phones and words follow the labels."""
    checked = 0
    for split in ("train", "test_unseen"):
        source = ShardSource(tiny_corpus, split)
        for i, u in enumerate(source.manifest):
            checked += check_alignment(u, source[i]["audio"])
    assert checked > 50


def test_silence_clips_hold_no_speech(corpus, tiny_corpus):
    source = ShardSource(tiny_corpus, "train")
    levels = {"silence": [], "speech": []}
    for i, u in enumerate(source.manifest):
        if u["task"] == "keyword":
            key = "silence" if u["keyword"] == sentences.SILENCE else "speech"
            levels[key].append(np.abs(source[i]["audio"]).max())
    assert levels["silence"] and levels["speech"]
    assert max(levels["silence"]) < 0.1 < min(levels["speech"])


def _tree_bytes(path):
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        if name == "corpus.json":
            info = json.loads(data)
            info.pop("build")
            data = json.dumps(info, sort_keys=True).encode()
        out[name] = data
    return out


def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    kw = dict(hours=0.01, seed=5, voices=["en-us", "de"])
    a = synth.build_corpus(str(tmp_path / "a"), num_workers=1, **kw)
    b = synth.build_corpus(str(tmp_path / "b"), num_workers=2, **kw)
    assert _tree_bytes(str(tmp_path / "a")) == _tree_bytes(str(tmp_path / "b"))
    assert a["languages"] == ["de", "en-us"] and b["build"]["workers"] == 2
    # Another seed plans other texts for the same speakers.
    plan5, _, _ = synth._plan(0.01, 5, ("en-us", "de"))
    plan6, _, _ = synth._plan(0.01, 6, ("en-us", "de"))
    assert [p["text"] for p in plan5] != [p["text"] for p in plan6]
    assert {p["speaker"] for p in plan5} == {p["speaker"] for p in plan6}


def test_clear_errors(tmp_path, tiny_corpus):
    with pytest.raises(ValueError, match="hours must be a positive"):
        synth.build_corpus(str(tmp_path / "x"), hours=0)
    with pytest.raises(ValueError, match="hours must be a positive"):
        synth.build_corpus(str(tmp_path / "x"), hours=-1.0)
    with pytest.raises(ValueError, match=r"unknown voice\(s\) \['klingon'\]"):
        synth.build_corpus(str(tmp_path / "x"), hours=0.01, voices=["klingon"])
    with pytest.raises(ValueError, match="already holds a different corpus"):
        synth.build_corpus(tiny_corpus, hours=0.05, seed=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        synth.build_corpus(str(tmp_path / "full"), hours=0.01)
    assert not os.path.exists(tmp_path / "x")
    assert synth.main(["--out", str(tmp_path / "y"), "--hours", "0"]) == 2


def test_existing_corpus_is_reused_and_cli_summary(tiny_corpus, capsys):
    before = os.path.getmtime(os.path.join(tiny_corpus, "corpus.json"))
    assert synth.main(["--out", tiny_corpus, "--hours", "0.05", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "speakers" in out and "real time per core" in out
    assert os.path.getmtime(os.path.join(tiny_corpus, "corpus.json")) == before


def test_ensure_corpus_builds_once_under_a_race(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_JAX_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_build(out, hours, seed):
        calls.append(out)
        threading.Event().wait(0.2)  # widen the race window
        os.makedirs(out)
        with open(os.path.join(out, "corpus.json"), "w") as f:
            json.dump({"hours_requested": hours, "seed": seed}, f)

    monkeypatch.setattr(synth, "build_corpus", fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(synth.ensure_corpus(0.5, 3)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The folder name carries the format version: an older corpus is never reused.
    expected = str(tmp_path / "cache" / f"corpus-v{synth.FORMAT_VERSION}-h0.5-s3")
    assert results == [expected] * 3 and calls == [expected]
    with pytest.raises(ValueError):
        synth.ensure_corpus(-1.0)


def test_speaker_count_grows_with_hours():
    """Plan level (nothing rendered): hundreds of speakers at 5-10 h, each a new (voice,
    variant), every voice and variant in the corpus from 1 h on."""
    catalogue = synth.speaker_catalogue()
    assert len(catalogue) == len(synth.ALL_VOICES) * len(synth.VARIANTS)
    assert len({(s.voice, s.variant) for s in catalogue}) == len(catalogue)
    assert len({s.id for s in catalogue}) == len(catalogue)
    counts = {h: synth.speaker_count(h, len(catalogue)) for h in (0.05, 0.5, 1, 2, 5, 10, 1000)}
    assert counts[0.05] == synth.MIN_SPEAKERS
    assert list(counts.values()) == sorted(counts.values())
    assert counts[1] >= 150 and counts[5] >= 350 and counts[10] >= 550
    assert counts[1000] == len(catalogue)
    for hours in (1, 5, 10):
        prefix = catalogue[:counts[hours]]
        assert {s.voice for s in prefix} == set(synth.ALL_VOICES), hours
        assert {s.variant for s in prefix} == set(synth.VARIANTS), hours
        english = sum(synth.VOICE_LANG[s.voice] == "en" for s in prefix) / len(prefix)
        female = sum(s.f0 >= 150 for s in prefix) / len(prefix)
        assert 0.35 < english < 0.55 and female > 0.25, (hours, english, female)
    # The plan takes the catalogue's first speakers; more hours, more speakers.
    specs, seen, unseen = synth._plan(5.0, 0, None)
    assert seen + unseen == catalogue[:counts[5]]
    assert {s["speaker"] for s in specs} - {synth.SILENCE_SPEAKER} == {s.id for s in catalogue[:counts[5]]}
    assert len(unseen) >= 40
    # A voice restriction keeps those voices' speakers with their ids.
    de = synth.speaker_catalogue(("de",))
    assert de == [s for s in catalogue if s.voice == "de"] and len(de) == len(synth.VARIANTS)


def test_speaker_prosody_is_realistic():
    catalogue = synth.speaker_catalogue()
    f0 = np.array([s.f0 for s in catalogue])
    female = np.array([synth.variant_f0(s.variant) >= synth.FEMALE_F0 for s in catalogue])
    assert 95 < np.median(f0[~female]) < 135 and 180 < np.median(f0[female]) < 230
    assert all(0 <= s.pitch <= 99 and 20 <= s.range <= 80 and 135 <= s.rate <= 215
               for s in catalogue)
    assert 0.5 < np.mean([s.wordgap == 0 for s in catalogue]) < 0.7
    assert max(abs(s.level_db) for s in catalogue) <= 3.0
    # espeak's pitch setting for an F0 target, and back.
    assert synth._pitch_for(synth.variant_f0("m1"), "m1") == 50
    assert synth._pitch_f0(99, "f1") == pytest.approx(1.72 * synth.variant_f0("f1"))
    for s in catalogue[:50]:
        if 0 < s.pitch < 99:  # the target was reachable
            assert synth._pitch_for(s.f0, s.variant) == s.pitch


def test_utterance_jitter_is_seeded_and_bounded():
    spk = synth.speaker_catalogue()[3]
    draws = [synth.utterance_prosody(np.random.default_rng([7, i]), spk, "neutral")
             for i in range(200)]
    again = [synth.utterance_prosody(np.random.default_rng([7, i]), spk, "neutral")
             for i in range(200)]
    assert draws == again
    pitch = [p.pitch for p, _ in draws]
    rate = [p.rate for p, _ in draws]
    levels = [level for _, level in draws]
    assert len(set(pitch)) > 5 and len(set(rate)) > 5 and len(set(levels)) > 50
    assert max(abs(x - spk.pitch) for x in pitch) <= round(2 * synth.JITTER["pitch"])
    assert max(abs(x - spk.range) for p, _ in draws for x in [p.range]) <= round(2 * synth.JITTER["range"])
    assert all(abs(np.log(r / spk.rate)) <= 2 * synth.JITTER["rate"] + 0.01 for r in rate)
    base = synth.NEUTRAL_LEVEL_DB + spk.level_db
    assert all(abs(level - base) <= 2 * synth.JITTER["level_db"] + 0.01 for level in levels)
    assert {p.wordgap - spk.wordgap for p, _ in draws} <= {-1, 0, 1} and \
        all(p.wordgap >= 0 and p.volume == synth.RENDER_VOLUME for p, _ in draws)
    loud = synth.utterance_prosody(np.random.default_rng([7, 0]), spk, "loud")
    assert loud[1] - draws[0][1] == pytest.approx(synth.STYLE_LEVEL_DB["loud"], abs=0.02)
    # The plan: one speaker's utterances in one style differ, and the same seed plans the same.
    plan = synth._plan(0.05, 0, None)[0]
    assert plan == synth._plan(0.05, 0, None)[0]
    by_speaker = collections.defaultdict(set)
    for spec in plan:
        if spec["voice"]:
            by_speaker[spec["speaker"], spec["style"]].add((spec["prosody"], spec["level"]))
    assert np.mean([len(v) > 1 for v in by_speaker.values()]) > 0.9
    with pytest.raises(ValueError, match="not a pretraining speaker"):
        synth.utterance_prosody(np.random.default_rng(0), synth.eval_speaker_catalogue()[0][0],
                                "neutral")


def test_variant_selection_covers_espeak():
    """Every espeak variant is a pretraining variant, an evaluation variant or excluded with a
    reason, exactly one of them; the Klatt variants synthesise with the Klatt synthesiser."""
    _, data = espeak.library_paths()
    files = set(os.listdir(os.path.join(data, "voices", "!v")))
    groups = [set(synth.VARIANTS), set(synth.EVAL_VARIANTS), set(synth.EXCLUDED_VARIANTS)]
    assert set.union(*groups) == files
    assert sum(len(g) for g in groups) == len(files)  # disjoint
    assert len(set(synth.VARIANTS)) == len(synth.VARIANTS) >= 30
    for variant in synth.KLATT_VARIANTS:
        with open(os.path.join(data, "voices", "!v", variant)) as f:
            assert any(line.split()[:1] == ["klatt"] for line in f), variant
    assert all(synth.EXCLUDED_VARIANTS.values())


def _periodic_share(x: np.ndarray, n: int = 1024) -> float:
    """Share of active 64 ms frames whose normalised autocorrelation peaks above 0.5 at a lag
    of 2-20 ms (16 kHz audio `[samples]`)."""
    frames = [x[i:i + n] for i in range(0, x.shape[0] - n, n // 2)]
    energy = np.array([np.sum(f ** 2) for f in frames])
    periodic = []
    for f in (f for f, e in zip(frames, energy) if e > 0.01 * energy.max()):
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[n - 1:]
        periodic.append(ac[32:320].max() / (ac[0] + 1e-12) > 0.5)
    return float(np.mean(periodic))


def test_variants_speak_with_periodic_voicing():
    """The selection rule of `synth.VARIANTS`, re-measured on one voiced sentence at the F0
    the catalogue gives a variant: every pretraining variant's speech is periodic; the
    whispered, croaky and aperiodic Klatt variants are not."""
    text = "We were away a year ago, and all of our lemons grew yellow."

    def share(variant):
        f0 = 205.0 if synth.variant_f0(variant) >= synth.FEMALE_F0 else 115.0
        prosody = espeak.Prosody(pitch=synth._pitch_for(f0, variant), volume=synth.RENDER_VOLUME)
        audio, *_ = synth._speak(text, f"en-us+{variant}", prosody, seed=1, level=-25.0)
        return _periodic_share(audio)

    shares = {v: share(v) for v in synth.VARIANTS}
    assert min(shares.values()) > 0.7, shares
    for variant in ("klatt", "klatt2", "whisper", "caleb", "croak"):
        assert share(variant) < 0.6, variant


def test_levels_follow_the_plan(tiny_corpus):
    """Neutral utterances are at their planned active speech level; peaks stay below the cap."""
    specs = {s["id"]: s for s in synth._plan(0.05, 0, None)[0]}
    source = ShardSource(tiny_corpus, "train")
    errors, peaks = [], []
    for i, u in enumerate(source.manifest):
        if u["task"] == "sentence" and u["style"] != "loud":
            audio = source[i]["audio"]
            errors.append(synth.active_level_db(audio) - specs[u["id"]]["level"])
            peaks.append(np.abs(audio).max())
    assert len(errors) > 20
    assert np.median(np.abs(errors)) < 0.5 and max(np.abs(errors)) < 3.0
    assert max(peaks) < 10 ** (synth.PEAK_DBFS / 20) + 0.01


def test_text_generators():
    for lang in ("en", "de", "fr", "fi", "pl"):
        vocab = sentences.vocabulary(lang)
        assert len(vocab) >= sentences.MIN_VOCAB and len(set(vocab)) == len(vocab)
        assert all(w.isalpha() and w == w.lower() for w in vocab)
    rng = np.random.default_rng(0)
    s = sentences.sentence(rng, "en", 7)
    assert len(s.split()) == 7 and s.endswith(".") and s[0].isupper()
    assert sentences.sentence(np.random.default_rng(1), "de", 5) == \
        sentences.sentence(np.random.default_rng(1), "de", 5)
    labels = collections.Counter(sentences.keyword(rng)[0] for _ in range(2000))
    assert set(labels) == set(sentences.KEYWORDS) | {sentences.UNKNOWN}
    for _ in range(50):
        label, word = sentences.keyword(rng, [sentences.UNKNOWN])
        assert word not in sentences.KEYWORDS
        text, slots = sentences.intent(rng)
        assert slots["object"] in text
        assert (slots["location"] == "none") == (" in the " not in text)
    with pytest.raises(ValueError, match="no word list"):
        sentences.vocabulary("xx")
    every = sentences.intents()
    assert len(every) == len({tuple(i.values()) for i in every}) == 52
    drawn = {tuple(sentences.intent(rng)[1].values()) for _ in range(2000)}
    assert drawn == {tuple(i.values()) for i in every}  # the grammar's intents, all of them
    for slots in every[:10]:
        assert slots["object"] in sentences.intent_text(rng, slots)
    with pytest.raises(ValueError, match="cannot express"):
        sentences.intent_text(rng, {"action": "bring", "object": "socks", "location": "kitchen"})
    with pytest.raises(ValueError, match="no spoken word"):
        sentences.keyword_word(rng, sentences.SILENCE)
    text = sentences.abx_sentence(rng, 5)
    words = text.rstrip(".").lower().split()
    assert text[0].isupper() and words[0] in sentences.ABX_WORDS and words[-1] in sentences.ABX_WORDS
    assert sum(w in sentences.ABX_WORDS for w in words) == 5
    assert set(words) <= set(sentences.ABX_WORDS) | set(sentences.FUNCTION_WORDS)
