"""Tests for ssl_jax/data/prepare.py: LibriSpeech folders, fairseq manifests, every bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ssl_jax.data import prepare as prep
from ssl_jax.data.shards import ShardSource, read_index

SR = 16_000


def _tone(seconds: float, rate: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate) + 0.01 * rng.standard_normal(n)
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def _skipped(out: str) -> dict[str, str]:
    with open(os.path.join(out, "skipped.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return {os.path.basename(p): r for p, r in rows}


@pytest.fixture()
def libri(tmp_path) -> str:
    """LibriSpeech layout with every kind of bad file."""
    root = tmp_path / "LibriSpeech" / "dev"
    ch = root / "84" / "121123"
    ch.mkdir(parents=True)
    sf.write(ch / "84-121123-0000.flac", _tone(1.0), SR)
    sf.write(ch / "84-121123-0001.flac", _tone(1.5, seed=1), SR)
    sf.write(ch / "84-121123-0002.wav", _tone(1.0, channels=2), SR)          # stereo
    sf.write(ch / "84-121123-0003.wav", _tone(1.0, rate=22_050), 22_050)     # resample
    sf.write(ch / "84-121123-0004.flac", _tone(0.1), SR)                      # too short
    sf.write(ch / "84-121123-0005.wav", np.zeros(0, np.float32), SR)          # empty
    bad = _tone(1.0)
    bad[100] = np.nan
    sf.write(ch / "84-121123-0006.wav", bad, SR, subtype="FLOAT")             # NaN
    (ch / "84-121123-0007.flac").write_bytes(b"not audio at all")             # unreadable
    (ch / "84-121123.trans.txt").write_text(
        "84-121123-0000 HELLO WORLD\n84-121123-0001 SECOND ONE\n84-121123-0002 STEREO\n")
    other = root / "174" / "50561"
    other.mkdir(parents=True)
    sf.write(other / "174-50561-0000.flac", _tone(2.0, seed=2), SR)
    return str(root)


def test_librispeech_folder(libri, tmp_path):
    out = str(tmp_path / "shards")
    s = prep.prepare(libri, out, min_seconds=0.5)
    assert s["utterances"] == 5 and s["downmixed"] == 1 and s["resampled"] == 1
    assert s["skipped"] == {"empty": 1, "non_finite": 1, "too_short": 1, "unreadable": 1}
    assert _skipped(out) == {"84-121123-0004.flac": "too_short", "84-121123-0005.wav": "empty",
                             "84-121123-0006.wav": "non_finite",
                             "84-121123-0007.flac": "unreadable"}
    src = ShardSource(out, "train")
    by_id = {m["id"]: (i, m) for i, m in enumerate(src.manifest)}
    i, m = by_id["84-121123-0000"]
    assert m["speaker"] == "84" and m["chapter"] == "121123" and m["text"] == "HELLO WORLD"
    np.testing.assert_allclose(src[i]["audio"], _tone(1.0), atol=1 / 32768)
    assert by_id["174-50561-0000"][1]["speaker"] == "174"
    assert "text" not in by_id["174-50561-0000"][1]
    i, m = by_id["84-121123-0002"]
    np.testing.assert_allclose(src[i]["audio"], _tone(1.0, channels=2).mean(1), atol=2 / 32768)
    i, m = by_id["84-121123-0003"]
    assert m["num_samples"] == SR  # 1 s at 22.05 kHz -> 16,000 samples
    assert abs(s["hours"] - 6.5 / 3600) < 1e-6
    assert read_index(out)["encoding"] == prep.DEFAULT_ENCODING


def test_flac_encoding_and_valid_split(libri, tmp_path):
    out = str(tmp_path / "shards")
    s = prep.prepare(libri, out, encoding="flac", valid_fraction=0.4, seed=1)
    assert set(s["splits"]) == {"train", "valid"}
    assert s["splits"]["train"]["utterances"] + s["splits"]["valid"]["utterances"] == 5
    ids = [{m["id"] for m in ShardSource(out, k).manifest} for k in ("train", "valid")]
    assert ids[0].isdisjoint(ids[1]) and ids[1]
    src = ShardSource(out, "train")
    assert src.encoding == "flac" and src[0]["audio"].shape == (src.num_samples[0],)


def test_fairseq_tsv_with_words_and_missing(libri, tmp_path):
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(f"{libri}\n84/121123/84-121123-0000.flac\t16000\n"
                   "84/121123/gone.flac\t16000\n174/50561/174-50561-0000.flac\t32000\n")
    (tmp_path / "dev.wrd").write_text("HELLO WORLD\nLOST\nTHIRD ONE\n")
    out = str(tmp_path / "shards")
    s = prep.prepare(str(tsv), out, split="dev")
    assert s["utterances"] == 2 and s["skipped"] == {"missing": 1}
    assert _skipped(out) == {"gone.flac": "missing"}
    texts = [m["text"] for m in ShardSource(out, "dev").manifest]
    assert texts == ["HELLO WORLD", "THIRD ONE"]


def test_fairseq_tsv_letters(libri, tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_text(f"{libri}\n174/50561/174-50561-0000.flac\t32000\n")
    (tmp_path / "a.ltr").write_text("T H I R D | O N E |\n")
    out = str(tmp_path / "shards")
    prep.prepare(str(tsv), out)
    assert ShardSource(out, "train").manifest[0]["text"] == "THIRD ONE"
    (tmp_path / "a.ltr").write_text("A |\nB |\n")
    with pytest.raises(ValueError, match="line by line"):
        prep.prepare(str(tsv), str(tmp_path / "other"))


def test_nothing_usable_is_a_clear_error(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.wav").write_bytes(b"RIFF junk")
    sf.write(src / "b.wav", _tone(0.1), SR)
    out = str(tmp_path / "out")
    with pytest.raises(prep.NoUsableAudioError, match="nothing usable"):
        prep.prepare(str(src), out)
    assert _skipped(out) == {"a.wav": "unreadable", "b.wav": "too_short"}
    with pytest.raises(FileNotFoundError):
        prep.prepare(str(tmp_path / "nowhere"), out)


def test_command_line(libri, tmp_path):
    out = str(tmp_path / "cli")
    ok = subprocess.run([sys.executable, "-m", "ssl_jax.data.prepare", "--src", libri, "--out",
                         out, "--min-seconds", "0.5", "--workers", "2"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "wrote 5 utterances" in ok.stdout and "unreadable 1" in ok.stdout
    assert "downmixed 1, resampled 1" in ok.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run([sys.executable, "-m", "ssl_jax.data.prepare", "--src", str(empty),
                          "--out", str(tmp_path / "o2")], capture_output=True, text=True)
    assert bad.returncode != 0 and "nothing usable" in bad.stderr


def test_speaker_from_folder_names(tmp_path):
    (tmp_path / "p225").mkdir()
    (tmp_path / "misc").mkdir()
    sf.write(tmp_path / "p225" / "p225_001.wav", _tone(1.0), SR)
    sf.write(tmp_path / "misc" / "take1.wav", _tone(1.0), SR)
    out = str(tmp_path / "out")
    prep.prepare(str(tmp_path), out)
    meta = {m["id"]: m for m in ShardSource(out, "train").manifest}
    assert meta["p225_001"]["speaker"] == "p225" and "speaker" not in meta["take1"]
