"""Tests for the evaluation corpus (`ssl_jax.data.synth.build_eval_corpus`).

The full-size plan is checked without rendering audio; a tiny corpus (`scale`) is rendered.
"""

import collections
import json
import math
import os
import threading

import numpy as np
import pytest

from ssl_jax.data import espeak, sentences, synth
from ssl_jax.data.shards import ShardSource, read_index, read_manifest
from ssl_jax.downstream import tasks
from tests.data.alignment_checks import check_alignment

TINY = 0.02


@pytest.fixture(scope="module")
def plan():
    specs, seen, unseen, abx = synth._eval_plan(0, 1.0)
    by_split = collections.defaultdict(list)
    for s in specs:
        by_split[s["split"]].append(s)
    return by_split, seen, unseen, abx


@pytest.fixture(scope="module")
def tiny(tiny_eval_corpus):
    with open(os.path.join(tiny_eval_corpus, "corpus.json")) as f:
        info = json.load(f)
    assert info["scale"] == TINY
    return tiny_eval_corpus, info, {s: read_manifest(tiny_eval_corpus, s) for s in synth.EVAL_SPLITS}


def _select(name, entries):
    return [e for e in entries if tasks.get(name).select(e)]


def _sentences_en(entries):
    """What PR and ASR read: English sentences."""
    return [e for e in entries if e["task"] == "sentence" and e["language"].startswith("en")]


def test_speakers_are_new_voices():
    """No evaluation speaker shares an espeak voice variant, let alone a (voice, variant),
    with any speaker the pretraining corpus can have (the whole catalogue, every voice, and
    the plan of the largest corpus)."""
    seen, unseen = synth.eval_speaker_catalogue()
    pretraining = synth.speaker_catalogue()
    assert len(pretraining) == len(synth.ALL_VOICES) * len(synth.VARIANTS)
    ids = [s.id for s in seen + unseen]
    assert len(set(ids)) == len(ids) and all(i.startswith("ev") for i in ids)
    assert not set(ids) & {s.id for s in pretraining}
    assert not set(synth.EVAL_VARIANTS) & set(synth.VARIANTS)
    assert not set(synth.EVAL_VARIANTS) & {s.variant for s in pretraining}
    key = lambda s: (s.voice, s.variant, s.pitch, s.rate, s.range)
    assert not {key(s) for s in seen + unseen} & {key(s) for s in pretraining}
    assert not {(s.voice, s.variant) for s in seen + unseen} & {(s.voice, s.variant) for s in pretraining}
    # The largest corpus (1000 h) takes every catalogue speaker and no other voice.
    count = synth.speaker_count(1000.0, len(pretraining))
    assert count == len(pretraining)
    evaluation = {f"{s.voice}+{s.variant}" for s in seen + unseen}
    assert not evaluation & {f"{s.voice}+{s.variant}" for s in pretraining[:count]}
    # Same voices and accents, variants that exist and sound like speech.
    assert {s.voice for s in seen} == {s.voice for s in seen + unseen} == set(synth.EVAL_VOICES)
    assert set(synth.EVAL_VOICES) <= set(synth.ALL_VOICES)
    _, data = espeak.library_paths()
    for variant in synth.EVAL_VARIANTS:
        assert os.path.isfile(os.path.join(data, "voices", "!v", variant)), variant
        assert not any(n in variant.lower() for n in ("whisper", "croak", "robo", "klatt", "demonic"))
    assert len(set(synth.EVAL_VARIANTS)) == len(synth.EVAL_VARIANTS)


def test_full_plan_sizes_for_probes(plan):
    by_split, seen, unseen, _ = plan
    labels = set(sentences.KEYWORD_LABELS)
    minimum = {"train": 1200, "valid": 300, "test": 600}
    for split, least in minimum.items():
        items = by_split[split]
        ks = collections.Counter(e["keyword"] for e in _select("ks", items))
        assert set(ks) == labels and len(set(ks.values())) == 1, (split, ks)  # balanced
        assert sum(ks.values()) >= least
        ic = collections.Counter(tuple(e["intent"].values()) for e in _select("ic", items))
        assert len(ic) == len(sentences.intents()) == 52 and len(set(ic.values())) == 1
        assert sum(ic.values()) >= least
        assert len(_select("sid", items)) >= least and len(_select("er", items)) >= least
        assert len(_sentences_en(items)) >= {"train": 1000, "valid": 150, "test": 300}[split]
        assert {e["style"] for e in items} == set(synth.STYLES)
        assert {e["speaker"] for e in items} == {s.id for s in seen} | {synth.SILENCE_SPEAKER}
    assert min(collections.Counter(e["keyword"] for e in by_split["train"]
                                   if e["task"] == "keyword").values()) >= 100
    train = collections.Counter(e["speaker"] for e in _select("sid", by_split["train"]))
    assert min(train[s.id] for s in seen) >= 15  # every seen speaker, for SID
    for s in seen:  # every style of every speaker in train
        assert {e["style"] for e in by_split["train"] if e["speaker"] == s.id} == set(synth.STYLES)


def test_full_plan_held_out_speakers_for_verification(plan):
    by_split, seen, unseen, _ = plan
    items = by_split["test_unseen"]
    per_speaker = collections.Counter(e["speaker"] for e in _select("asv", items))
    assert set(per_speaker) == {s.id for s in unseen} and len(per_speaker) >= 16
    assert not set(per_speaker) & {s.id for s in seen}
    target_pairs = sum(math.comb(n, 2) for n in per_speaker.values())
    nontarget_pairs = math.comb(sum(per_speaker.values()), 2) - target_pairs
    assert min(target_pairs, nontarget_pairs) >= 5000  # 10,000 balanced trials, none repeated
    languages = collections.Counter(e["language"].startswith("en") for e in items)
    assert languages[True] >= 100 and languages[False] >= 100
    assert {e["style"] for e in items} == set(synth.STYLES)


def test_full_plan_abx_splits(plan):
    by_split, seen, _, abx = plan
    words = by_split["abx_words"]
    assert len(abx) >= 24 and {s.id for s in abx} <= {s.id for s in seen}
    assert len({s.voice for s in abx}) >= 5 and all(s.voice in synth.ENGLISH_VOICES for s in abx)
    spoken = collections.Counter((e["speaker"], e["text"]) for e in words)
    assert set(spoken.values()) == {1}
    assert len(spoken) == len(abx) * len(sentences.ABX_WORDS) and len(sentences.ABX_WORDS) >= 40
    runs = by_split["abx_sentences"]
    per_speaker = collections.Counter(e["speaker"] for e in runs)
    assert set(per_speaker) == {s.id for s in abx} and min(per_speaker.values()) >= 10
    vocab = set(sentences.ABX_WORDS) | set(sentences.FUNCTION_WORDS)
    for e in runs:
        assert set(espeak.text_words(e["text"].lower())) <= vocab
    assert {e["task"] for e in words} == {"word"} and {e["task"] for e in runs} == {"abx_sentence"}
    assert {e["style"] for e in words + runs} == {"neutral"}
    # The probing tasks never pick up ABX material.
    for name in ("ks", "ic"):
        assert not _select(name, words + runs)


def test_abx_words_are_distinct_in_every_english_accent():
    with espeak.Espeak() as es:
        for voice in synth.ENGLISH_VOICES:
            phones = {tuple(es.phonemes(w, voice)) for w in sentences.ABX_WORDS}
            assert len(phones) == len(sentences.ABX_WORDS), voice


def test_tiny_corpus_summary(tiny):
    path, info, manifests = tiny
    assert info["corpus"] == "evaluation" and info["format"] == synth.EVAL_FORMAT
    assert info["scale"] == TINY and "Evaluation corpus" in info["purpose"]
    assert set(read_index(path)["splits"]) == set(info["splits"]) == set(synth.EVAL_SPLITS)
    for split, m in manifests.items():
        assert info["splits"][split]["utterances"] == len(m) > 0
        counts = info["counts"][split]
        assert counts["task"] == dict(collections.Counter(u["task"] for u in m))
        assert counts["intent"] == dict(collections.Counter(
            "/".join(u["intent"].values()) for u in m if u["intent"]))
        assert sum(counts["hours_by_task"].values()) == pytest.approx(info["splits"][split]["hours"])
    speakers = {s["id"]: s for s in info["speakers"]}
    assert {u["speaker"] for m in manifests.values() for u in m} <= set(speakers) | {synth.SILENCE_SPEAKER}
    assert {speakers[u["speaker"]]["split"] for u in manifests["test_unseen"]} == {"unseen"}
    assert all(speakers[u["speaker"]]["abx"] for u in manifests["abx_words"])
    assert info["abx_words"] == list(dict.fromkeys(
        w for w in sentences.ABX_WORDS if w in {u["text"] for u in manifests["abx_words"]}))
    assert info["abx_triphones"] == synth.triphone_triplets(manifests["abx_sentences"])


def test_tiny_corpus_alignments(tiny):
    path, _, manifests = tiny
    checked = 0
    for split in synth.EVAL_SPLITS:
        source = ShardSource(path, split)
        for i, u in enumerate(source.manifest):
            assert set(u) >= {"alignment", "phonemes", "text", "speaker", "task", "style"}
            audio = source[i]["audio"]
            checked += check_alignment(u, audio)
            if u["task"] == "word":  # the word alone, with 50-150 ms of silence around it
                (word, start, end), = u["alignment"]["words"]
                assert word == u["text"]
                assert 800 <= start < 2400 and 800 <= u["num_samples"] - end < 2400
    assert checked > 50


def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    a = synth.build_eval_corpus(str(tmp_path / "a"), seed=3, scale=0.01, num_workers=1)
    b = synth.build_eval_corpus(str(tmp_path / "b"), seed=3, scale=0.01, num_workers=2)
    assert a["build"]["workers"] == 1 and b["build"]["workers"] == 2
    for name in sorted(os.listdir(tmp_path / "a")):
        da, db = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        if name == "corpus.json":
            da, db = ({k: v for k, v in json.loads(d).items() if k != "build"} for d in (da, db))
        assert da == db, name
    plan4 = synth._eval_plan(4, 0.01)[0]
    assert [p["text"] for p in plan4] != [p["text"] for p in synth._eval_plan(3, 0.01)[0]]


def test_abx_words_alone_equal_the_full_corpus_split(tiny, tmp_path, monkeypatch):
    """`ensure_eval_abx_words` builds the `abx_words` split alone, byte for byte the split of
    the full evaluation corpus of the same seed and scale, once into the cache."""
    path, info, manifests = tiny
    monkeypatch.setenv("SSL_JAX_CACHE", str(tmp_path / "cache"))
    out = synth.ensure_eval_abx_words(seed=0, scale=TINY)
    assert out == str(tmp_path / "cache" / f"evalabxwords-v{synth.EVAL_FORMAT_VERSION}-x{TINY:g}-s0")
    index = read_index(out)
    assert list(index["splits"]) == ["abx_words"]
    names = sorted(n for n in os.listdir(out) if n.startswith("abx_words"))
    assert names == sorted(n for n in os.listdir(path) if n.startswith("abx_words"))
    for name in names:
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(path, name), "rb") as b:
            assert a.read() == b.read(), name
    alone, full = ShardSource(out, "abx_words"), ShardSource(path, "abx_words")
    assert len(alone) == len(full) == info["splits"]["abx_words"]["utterances"]
    for i in range(len(alone)):
        assert np.array_equal(alone[i]["audio"], full[i]["audio"])
    with open(os.path.join(out, "corpus.json")) as f:
        words = json.load(f)
    assert words["abx_words"] == info["abx_words"] and words["num_speakers"] == info["splits"]["abx_words"]["speakers"]
    before = os.path.getmtime(os.path.join(out, "corpus.json"))
    assert synth.ensure_eval_abx_words(seed=0, scale=TINY) == out  # cached
    assert os.path.getmtime(os.path.join(out, "corpus.json")) == before
    with pytest.raises(ValueError, match="seed must be"):
        synth.ensure_eval_abx_words(seed=-1)


def test_triphone_triplets_counts():
    def entry(speaker, phones):
        return {"speaker": speaker,
                "alignment": {"phones": [[p, 200 * i, 200 * i + 200] for i, p in enumerate(phones)]}}

    entries = [entry("s1", "bɪt"), entry("s1", "bæt"), entry("s2", "bɪt"), entry("s2", "bæt"),
               entry("s3", "bɪt")]
    # Context b_t: s1 and s2 have both centres; A/B in s1 with X in s2 or s3 (ɪ) or s2 (æ), ...
    counts = synth.triphone_triplets(entries)
    assert counts["triphones"] == 2 and counts["contexts"] == 1
    # (A, B) = (ɪ, æ) in s1: X in s2, s3; (æ, ɪ) in s1: X in s2; same for s2 with s1 / s3.
    assert counts["categories"] == counts["triplets"] == 6
    short = [dict(e, alignment={"phones": [["b", 0, 200], ["ɪ", 200, 300], ["t", 300, 500]]})
             for e in entries]
    assert synth.triphone_triplets(short)["triphones"] == 0  # centres under 10 ms left out


def test_cli_and_cache(tiny, tmp_path, monkeypatch, capsys):
    path, _, _ = tiny
    before = os.path.getmtime(os.path.join(path, "corpus.json"))
    assert synth.main(["--eval", "--out", path, "--scale", str(TINY), "--seed", "0"]) == 0
    assert "evaluation corpus" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(path, "corpus.json")) == before  # reused
    assert synth.main(["--eval", "--out", str(tmp_path / "x"), "--hours", "1"]) == 2
    assert synth.main(["--out", str(tmp_path / "x"), "--scale", "0.5"]) == 2
    assert synth.main(["--eval", "--out", str(tmp_path / "x"), "--scale", "0"]) == 2
    assert "scale must be" in capsys.readouterr().err
    with pytest.raises(ValueError, match="already holds a different corpus"):
        synth.build_eval_corpus(path, seed=1, scale=TINY)

    monkeypatch.setenv("SSL_JAX_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_build(out, seed, scale):
        calls.append(out)
        threading.Event().wait(0.2)  # widen the race window
        os.makedirs(out)
        with open(os.path.join(out, "corpus.json"), "w") as f:
            json.dump({"seed": seed}, f)

    monkeypatch.setattr(synth, "build_eval_corpus", fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(synth.ensure_eval_corpus(seed=2)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = str(tmp_path / "cache" / f"evalcorpus-v{synth.EVAL_FORMAT_VERSION}-s2")
    assert results == [expected] * 3 and calls == [expected]
    assert synth.ensure_eval_corpus(seed=2, scale=0.5).endswith(
        f"evalcorpus-v{synth.EVAL_FORMAT_VERSION}-x0.5-s2")
