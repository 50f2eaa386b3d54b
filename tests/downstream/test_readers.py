"""Readers on tiny fixtures built in each dataset's released layout."""

import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from ssl_jax.data.shards import ShardSource, read_index
from ssl_jax.downstream import readers


def _wav(path, seconds=0.1, sr=16000, channels=1, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.1 * np.sin(2 * np.pi * 440 * t)
    if channels > 1:
        x = np.stack([x] * channels, 1)
    sf.write(path, x, sr, format=fmt)


def test_librispeech(tmp_path, caplog):
    root = tmp_path / "LibriSpeech"
    for sub, spk in (("train-clean-100", "19"), ("dev-clean", "84"), ("test-clean", "61")):
        d = root / sub / spk / "198"
        lines = []
        for k, text in enumerate(["HELLO WORLD", "GOOD MORNING"]):
            uid = f"{spk}-198-{k:04d}"
            _wav(str(d / f"{uid}.flac"), fmt="FLAC")
            lines.append(f"{uid} {text}")
        (d / f"{spk}-198.trans.txt").write_text("\n".join(lines) + "\n")
    lex = tmp_path / "lexicon.txt"
    lex.write_text("HELLO HH AH0 L OW1\nWORLD W ER1 L D\nGOOD G UH1 D\n")
    out = readers.librispeech(str(root), lexicon=str(lex))
    assert sorted(k for k in out if not k.startswith("_")) == ["test", "train", "valid"]
    e = out["train"][0]
    assert e["id"] == "19-198-0000" and e["speaker"] == "19" and e["text"] == "HELLO WORLD"
    assert e["phonemes"] == ["HH", "AH", "L", "OW", "W", "ER", "L", "D"]
    assert out["train"][1]["phonemes"] == []  # MORNING is not in the lexicon
    assert out["_stats"] == {"oov_utterances": {"train": 1, "valid": 1, "test": 1}, "oov_words": 1,
                             "oov_examples": ["morning"]}
    with caplog.at_level(logging.WARNING, logger=readers.__name__):
        shard_dir = readers.prepare("librispeech", str(root), str(tmp_path / "shards"), lexicon=str(lex))
    assert "train 1/2" in caplog.text and "morning" in caplog.text
    info = json.load(open(os.path.join(shard_dir, "prepare.json")))
    assert info["reader_stats"]["oov_utterances"] == {"train": 1, "valid": 1, "test": 1}
    assert info["utterances"] == {"train": 2, "valid": 2, "test": 2} and info["class_counts"] == {}
    src = ShardSource(shard_dir, "valid")
    assert len(src) == 2 and src.manifest[0]["speaker"] == "84"
    assert src[0]["audio"].shape == (1600,)
    with pytest.raises(FileNotFoundError, match="subset"):
        readers.librispeech(str(tmp_path / "nowhere"))


def test_speech_commands(tmp_path):
    root = tmp_path / "speech_commands_v0.01"
    files = {"yes": ["aa_nohash_0", "bb_nohash_0", "cc_nohash_0"], "no": ["aa_nohash_1", "dd_nohash_0"],
             "marvin": ["ee_nohash_0", "ff_nohash_0"]}
    for word, names in files.items():
        for n in names:
            _wav(str(root / word / f"{n}.wav"))
    (root / "validation_list.txt").write_text("yes/bb_nohash_0.wav\nmarvin/ee_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cc_nohash_0.wav\nno/dd_nohash_0.wav\n")
    _wav(str(root / "_background_noise_" / "white_noise.wav"), seconds=20.0)
    out = readers.speech_commands(str(root))
    labels = {s: sorted(e["keyword"] for e in es if e["keyword"] != "_silence_") for s, es in out.items()}
    assert labels == {"train": ["_unknown_", "no", "yes"], "valid": ["_unknown_", "yes"], "test": ["no", "yes"]}
    sil = {s: sum(e["keyword"] == "_silence_" for e in es) for s, es in out.items()}
    assert sil == {"train": 16, "valid": 2, "test": 2}
    yes = next(e for e in out["train"] if e["keyword"] == "yes")
    assert yes["speaker"] == "aa" and yes["task"] == "keyword"
    shard_dir = readers.prepare("speech_commands", str(root), str(tmp_path / "shards"))
    src = ShardSource(shard_dir, "test")
    silences = [i for i, m in enumerate(src.manifest) if m["keyword"] == "_silence_"]
    assert len(silences) == 2 and src[silences[0]]["audio"].shape == (16000,)
    info = json.load(open(os.path.join(shard_dir, "prepare.json")))
    assert info["class_counts"]["train"] == {"_silence_": 16, "_unknown_": 1, "no": 1, "yes": 1}


def test_speech_commands_superb_test_set(tmp_path, caplog):
    """SUPERB's KS: train/valid from the list files, test from the released v0.01 test set."""
    root, test_root = tmp_path / "speech_commands_v0.01", tmp_path / "speech_commands_test_set_v0.01"
    for rel in ("yes/aa_nohash_0", "yes/bb_nohash_0", "yes/cc_nohash_0", "no/aa_nohash_1", "bed/dd_nohash_0"):
        _wav(str(root / f"{rel}.wav"))
    (root / "validation_list.txt").write_text("yes/bb_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cc_nohash_0.wav\n")
    _wav(str(root / "_background_noise_" / "running_tap.wav"), seconds=20.5)
    for rel in ("yes/ee_nohash_0", "off/ff_nohash_0", "_silence_/gg_nohash_0", "_silence_/hh_nohash_0",
                "_unknown_/bird_ii_nohash_0"):
        _wav(str(test_root / f"{rel}.wav"), seconds=1.0)
    with caplog.at_level(logging.WARNING, logger=readers.__name__):
        readers.speech_commands(str(root))
    assert "not the separately released test set" in caplog.text
    out = readers.speech_commands(str(root), test_root=str(test_root))
    keys = {s: sorted(e["keyword"] for e in es) for s, es in out.items()}
    # testing_list.txt files are used nowhere; every noise window outside valid trains.
    assert keys["train"] == ["_silence_"] * 18 + ["_unknown_", "no", "yes"]
    assert keys["valid"] == ["_silence_"] * 2 + ["yes"]
    assert keys["test"] == ["_silence_", "_silence_", "_unknown_", "off", "yes"]
    assert all(e["text"] == "" for e in out["test"] if e["keyword"].startswith("_"))
    shard_dir = readers.prepare("speech_commands", str(root), str(tmp_path / "shards"), test_root=str(test_root))
    info = json.load(open(os.path.join(shard_dir, "prepare.json")))
    assert info["class_counts"] == {
        "train": {"_silence_": 18, "_unknown_": 1, "no": 1, "yes": 1},
        "valid": {"_silence_": 2, "yes": 1},
        "test": {"_silence_": 2, "_unknown_": 1, "off": 1, "yes": 1},
    }
    assert info["utterances"] == {"train": 21, "valid": 3, "test": 5}
    src = ShardSource(shard_dir, "train")
    assert all(src[i]["audio"].shape == (16000,) for i, m in enumerate(src.manifest) if m["keyword"] == "_silence_")
    with pytest.raises(FileNotFoundError, match="test set"):
        readers.speech_commands(str(root), test_root=str(tmp_path / "nowhere"))


def test_voxceleb1(tmp_path):
    root = tmp_path / "vox1"
    iden, rels = [], []
    for spk in ("id10001", "id10002", "id10270", "id10271"):
        for vid in ("vidA", "vidB"):
            for k in range(1, 3):
                rel = f"{spk}/{vid}/{k:05d}.wav"
                _wav(str(root / "wav" / rel))
                rels.append(rel)
    for k, rel in enumerate(r for r in rels if r.startswith(("id10001", "id10002"))):
        iden.append(f"{1 + k % 3} {rel}")
    (root / "iden_split.txt").write_text("\n".join(iden) + "\n")
    (root / "veri_test.txt").write_text(
        "1 id10270/vidA/00001.wav id10270/vidB/00002.wav\n0 id10270/vidA/00001.wav id10271/vidA/00001.wav\n")
    out = readers.voxceleb1(str(root))
    assert sum(len(out[s]) for s in ("sid_train", "sid_valid", "sid_test")) == 8
    assert {e["speaker"] for e in out["asv_train"] + out["asv_valid"]} == {"id10001", "id10002"}
    assert len(out["asv_train"]) + len(out["asv_valid"]) == 8 and len(out["asv_test"]) == 3
    shard_dir = readers.prepare("voxceleb1", str(root), str(tmp_path / "shards"))
    ids = [m["id"] for m in ShardSource(shard_dir, "asv_test").manifest]
    trials = readers.read_trials(shard_dir, "asv_test", ids)
    assert trials.shape == (2, 3) and trials[:, 2].tolist() == [1, 0]
    assert ids[trials[0, 0]] == "id10270-vidA-00001" and ids[trials[0, 1]] == "id10270-vidB-00002"


def test_fluent_speech_commands(tmp_path):
    root = tmp_path / "fluent_speech_commands_dataset"
    header = ",path,speakerId,transcription,action,object,location\n"
    for split in ("train", "valid", "test"):
        rows = []
        for k in range(2):
            rel = f"wavs/speakers/spk{k}/{split}{k}.wav"
            _wav(str(root / rel), sr=16000, channels=2)  # stereo is downmixed
            rows.append(f"{k},{rel},spk{k},Turn on the lights,activate,lights,kitchen")
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / f"{split}_data.csv").write_text(header + "\n".join(rows) + "\n")
    out = readers.fluent_speech_commands(str(root))
    e = out["valid"][1]
    assert e["intent"] == {"action": "activate", "object": "lights", "location": "kitchen"}
    assert e["speaker"] == "spk1" and e["task"] == "intent" and e["id"] == "valid1"
    shard_dir = readers.prepare("fluent_speech_commands", str(root), str(tmp_path / "shards"))
    assert read_index(shard_dir)["splits"]["train"]["num_utterances"] == 2
    assert ShardSource(shard_dir, "train")[0]["audio"].ndim == 1


def test_iemocap_four_classes_leave_one_session_out(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    labels = ["neu", "hap", "exc", "ang", "sad", "fru", "xxx"]
    for s in (1, 2):
        dialog = f"Ses0{s}F_impro01"
        lines = ["% header line", ""]
        for k, lab in enumerate(labels):
            uid = f"{dialog}_F{k:03d}"
            _wav(str(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{uid}.wav"), sr=8000)
            lines.append(f"[1.0 - 2.0]\t{uid}\t{lab}\t[2.5, 2.5, 2.5]")
            lines.append(f"C-E1:\t{lab};\t()")
        d = root / f"Session{s}" / "dialog" / "EmoEvaluation"
        d.mkdir(parents=True)
        (d / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    out = readers.iemocap(str(root), test_session=2, valid_fraction=0.3)
    assert sorted(e["style"] for e in out["test"]) == ["angry", "happy", "happy", "neutral", "sad"]
    assert all(e["id"].startswith("Ses02") for e in out["test"])
    assert len(out["train"]) + len(out["valid"]) == 5 and out["valid"]
    assert out["test"][0]["speaker"] == "Ses02F"
    shard_dir = readers.prepare("iemocap", str(root), str(tmp_path / "shards"), test_session=2,
                                valid_fraction=0.3)
    assert ShardSource(shard_dir, "test")[0]["audio"].shape == (1600,)  # 8 kHz resampled to 16 kHz


def test_prepare_skips_unreadable_files(tmp_path):
    root = tmp_path / "fsc"
    (root / "data").mkdir(parents=True)
    _wav(str(root / "ok.wav"))
    (root / "bad.wav").write_bytes(b"not audio")
    header = ",path,speakerId,transcription,action,object,location\n"
    for split in ("train", "valid", "test"):
        (root / "data" / f"{split}_data.csv").write_text(
            header + "0,ok.wav,s,t,a,o,l\n1,bad.wav,s,t,a,o,l\n")
    shard_dir = readers.prepare("fluent_speech_commands", str(root), str(tmp_path / "shards"))
    import json

    info = json.load(open(os.path.join(shard_dir, "prepare.json")))
    assert info["skipped"] == 3 and len(ShardSource(shard_dir, "test")) == 1
    # The skip rules and reasons are `data.prepare`'s.
    assert all(f.startswith(str(root / "bad.wav") + "\tunreadable: ") for f in info["skipped_files"])
    with pytest.raises(KeyError, match="readers"):
        readers.prepare("timit", str(root), str(tmp_path / "x"))


def test_prepare_refuses_a_folder_prepared_from_other_data(tmp_path):
    roots = []
    for name in ("fsc_a", "fsc_b"):
        root = tmp_path / name
        (root / "data").mkdir(parents=True)
        _wav(str(root / "ok.wav"))
        for split in ("train", "valid", "test"):
            (root / "data" / f"{split}_data.csv").write_text(
                ",path,speakerId,transcription,action,object,location\n0,ok.wav,s,t,a,o,l\n")
        roots.append(str(root))
    out = str(tmp_path / "shards")
    assert readers.prepare("fluent_speech_commands", roots[0], out) == out
    stamp = os.path.getmtime(os.path.join(out, "prepare.json"))
    # The same reader, root (also spelled relatively) and arguments reuse the folder.
    rel = os.path.relpath(roots[0])
    assert readers.prepare("fluent_speech_commands", rel, out) == out
    assert os.path.getmtime(os.path.join(out, "prepare.json")) == stamp
    with pytest.raises(ValueError, match="fsc_a"):
        readers.prepare("fluent_speech_commands", roots[1], out)
    with pytest.raises(ValueError, match="delete it"):
        readers.prepare("iemocap", roots[0], out, test_session=2)
