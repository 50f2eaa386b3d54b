"""Tests for ssl_jax/data/augment.py: each transform on known signals, settings, the Grain stages."""

import numpy as np
import pytest
import scipy.signal

from ssl_jax.data import augment as A

SR = 16_000


def _speechlike(n: int, seed: int = 0, f0: float = 150.0) -> np.ndarray:
    """Harmonics of a gliding f0 under a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / SR
    x = sum(np.sin(h * phase) / h for h in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.1 * x + 0.002 * rng.standard_normal(n)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[np.argmax(spec)])


def _sine(hz: float, n: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(n) / SR)).astype(np.float32)


def test_settings_from_config():
    off = A.settings_from_config(None)
    assert not off.active and off == A.AugmentSettings()
    s = A.settings_from_config({"noise": {"prob": 0.5, "snr_db": [0, 10]},
                                "babble": {"speakers": (2.0, 4.0)}, "clean_copy": True})
    assert s.active and s.noise_prob == 0.5 and s.noise_snr_db == (0, 10) and s.clean_copy
    assert s.babble_speakers == (2, 4) and s.speed_prob == 0.0
    with pytest.raises(ValueError, match="valid fields.*babble"):
        A.settings_from_config({"nosie": {"prob": 0.5}})
    with pytest.raises(ValueError, match="valid fields.*snr_db"):
        A.settings_from_config({"noise": {"snr": 3}})
    with pytest.raises(ValueError, match="prob"):
        A.settings_from_config({"pitch": {"prob": 1.5}})
    with pytest.raises(ValueError, match="rt60"):
        A.settings_from_config({"reverb": {"rt60": (0.9, 0.3)}})
    with pytest.raises(ValueError, match="speakers"):
        A.settings_from_config({"babble": {"speakers": (2.5, 4)}})
    with pytest.raises(ValueError, match="room"):
        A.settings_from_config({"reverb": {"room_min": (0.5, 3, 3)}})


def test_base_recipe_section_is_all_off_and_parses():
    from ssl_jax.training.config_check import load_config_file

    c = load_config_file("configs/w2v2_base.py")
    s = A.settings_from_config(c.data.augment)
    assert not s.active
    # Every range in the recipe is a valid setting when its transform is turned on.
    on = {g: dict(c.data.augment[g], prob=1.0) for g in A._FIELDS}
    assert A.settings_from_config(on).active


@pytest.mark.parametrize("name", ["pitch", "reverb", "noise", "telephone"])
def test_length_preserving_transforms(name):
    rng = np.random.default_rng(0)
    bank = A.coloured_noise(rng, 5 * SR, 1.0)
    fns = {
        "pitch": lambda x: A.pitch_shift(x, 2.5),
        "reverb": lambda x: A.reverberate(x, A.room_impulse_response(rng, 0.5, (3, 3, 2.4),
                                                                     (8, 6, 3))),
        "noise": lambda x: A.add_noise(x, bank[:x.size], 5.0),
        "telephone": A.telephone,
    }
    for n in (SR + 17, 3 * SR, 1):
        x = _speechlike(n)
        y = fns[name](x)
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        z = fns[name](np.zeros(n, np.float32))  # silence stays finite (and silent but for noise)
        assert z.shape == (n,) and np.isfinite(z).all() and (name == "noise" or not z.any())
    assert fns[name](np.zeros(0, np.float32)).shape == (0,)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_length_and_frequency(factor):
    x = _sine(300.0, 2 * SR + 3)
    y = A.speed_perturb(x, factor)
    assert y.dtype == np.float32 and abs(y.size - x.size / factor) <= 1
    assert _peak_hz(y) == pytest.approx(300.0 * factor, rel=0.01)
    assert A.speed_perturb(x, 1.0) is x or np.array_equal(A.speed_perturb(x, 1.0), x)


@pytest.mark.parametrize("semitones", [-4.0, 3.0, 12.0])
def test_pitch_shift_moves_frequency_keeps_duration_and_level(semitones):
    x = _sine(200.0, 2 * SR)
    y = A.pitch_shift(x, semitones)
    assert y.shape == x.shape
    assert _peak_hz(y) == pytest.approx(200.0 * 2 ** (semitones / 12), rel=0.01)
    # WSOLA splices continue the waveform: the level stays put (no cancellation at the joins).
    mid = slice(SR // 4, -SR // 4)
    assert np.sqrt(np.mean(y[mid] ** 2)) == pytest.approx(np.sqrt(np.mean(x[mid] ** 2)), rel=0.03)


def test_time_stretch_keeps_frequency():
    x = _sine(440.0, SR)
    for out in (int(0.8 * SR), int(1.25 * SR)):
        y = A.time_stretch(x, out)
        assert y.shape == (out,) and _peak_hz(y[SR // 10:-SR // 10]) == pytest.approx(440, rel=0.01)


@pytest.mark.parametrize("snr", [0.0, 7.5, 20.0])
def test_noise_at_requested_snr(snr):
    x = _speechlike(2 * SR)
    rng = np.random.default_rng(1)
    for beta in (0.0, 1.0, 2.0):
        noise = A.coloured_noise(rng, x.size, beta)
        y = A.add_noise(x, noise, snr)
        measured = 10 * np.log10(np.sum(x.astype(np.float64) ** 2)
                                 / np.sum((y - x).astype(np.float64) ** 2))
        assert measured == pytest.approx(snr, abs=0.05)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_coloured_noise_spectral_slope(beta):
    x = A.coloured_noise(np.random.default_rng(2), 20 * SR, beta)
    assert x.dtype == np.float32 and np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-3)
    f, p = scipy.signal.welch(x, SR, nperseg=4096)
    band = (f > 50) & (f < 5000)
    slope = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
    assert slope == pytest.approx(-beta, abs=0.15)


def test_telephone_removes_energy_above_4k_and_keeps_the_band():
    x = A.coloured_noise(np.random.default_rng(3), 2 * SR, 0.0) * 0.1
    y = A.telephone(x)
    f, px = scipy.signal.welch(x, SR, nperseg=1024)
    _, py = scipy.signal.welch(y, SR, nperseg=1024)
    assert py[f > 4100].sum() < 1e-4 * py.sum()
    band = (f > 300) & (f < 3400)
    assert py[band].sum() == pytest.approx(px[band].sum(), rel=0.1)
    levels = np.unique(A.mu_law(np.linspace(-1, 1, 10_001)))
    assert levels.size <= 256 and np.abs(A.mu_law(np.array([0.5])) - 0.5) < 0.02


def test_room_impulse_response_decays_at_rt60_and_is_aligned():
    def rt60_of(h):  # Schroeder backward integration, fit from -5 to -25 dB (T20)
        e = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
        edc = 10 * np.log10(e / e[0] + 1e-30)
        i5, i25 = np.argmax(edc < -5), np.argmax(edc < -25)
        return -60 / np.polyfit(np.arange(i5, i25) / SR, edc[i5:i25], 1)[0]

    for rt60 in (0.25, 0.6):
        for seed in range(3):
            h = A.room_impulse_response(np.random.default_rng(seed), rt60, (3, 3, 2.4), (9, 7, 3.5))
            assert h.dtype == np.float32 and h[0] == 1.0 and np.abs(h[1:]).max() < 1.0
            assert h.size <= rt60 * SR + 2 and np.isfinite(h).all()
            assert rt60_of(h) == pytest.approx(rt60, rel=0.15)
    # Reverberation keeps the level and the timing: the dry signal correlates best at lag 0.
    x = A.coloured_noise(np.random.default_rng(4), 2 * SR, 0.0)
    y = A.reverberate(x, A.shoebox_rir(np.random.default_rng(0), np.array([5.0, 4.0, 3.0]),
                                       np.array([1.0, 1.0, 1.5]), np.array([2.0, 1.5, 1.5]), 0.4))
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-3)
    lags = np.arange(-200, 201)
    xc = [np.dot(x[200:-200], y[200 + k:y.size - 200 + k]) for k in lags]
    assert lags[int(np.argmax(xc))] == 0
    with pytest.raises(ValueError, match="inside the room"):
        A.shoebox_rir(np.random.default_rng(0), np.array([3.0, 3, 3]), np.array([4.0, 1, 1]),
                      np.array([1.0, 1, 1]), 0.3)


class _Source:
    """A stand-in for a ShardSource: speech-like utterances."""

    def __init__(self, n=12):
        self.num_samples = np.array([SR // 2 + 997 * i for i in range(n)])
        self._audio = [_speechlike(int(k), seed=100 + i, f0=120 + 9 * i)
                       for i, k in enumerate(self.num_samples)]

    def __getitem__(self, i):
        return {"audio": self._audio[int(i)]}


@pytest.fixture
def small_banks(monkeypatch):
    monkeypatch.setattr(A, "_NOISE_BANK_SECONDS", 5.0)
    monkeypatch.setattr(A, "_BABBLE_BANK_SECONDS", 5.0)


ALL_ON = {"speed": {"prob": 1.0, "factors": (0.9, 1.1)}, "pitch": {"prob": 1.0},
          "reverb": {"prob": 1.0}, "noise": {"prob": 1.0}, "babble": {"prob": 1.0, "speakers": (2, 3)},
          "telephone": {"prob": 1.0}}


def _element(batch=5):
    src = _Source()
    return {"batch": batch, "rows": np.arange(3), "wavs": [src[2]["audio"], None, src[5]["audio"]]}


def test_grain_stages_are_deterministic_and_keep_padding_items_empty(small_banks):
    settings = A.settings_from_config(dict(ALL_ON, clean_copy=True))
    src = _Source()
    outs = []
    for seed in (7, 7, 8):
        aug = A.Augmenter(settings, seed=seed, source=src)
        outs.append(A.Augment(aug).map(A.SpeedPerturb(aug).map(_element())))
    a, b, c = outs
    assert a["wavs"][1] is None and a["clean"][1] is None and a["speed"][1] == 1.0
    assert all(np.isclose(a["speed"][k], 0.9) or np.isclose(a["speed"][k], 1.1) for k in (0, 2))
    for k in (0, 2):
        assert np.array_equal(a["wavs"][k], b["wavs"][k]) and np.isfinite(a["wavs"][k]).all()
        assert a["wavs"][k].size == a["clean"][k].size and not np.array_equal(a["wavs"][k], c["wavs"][k])
        assert not np.array_equal(a["wavs"][k], a["clean"][k])
    # Another batch number draws other augmentations.
    d = A.Augment(aug).map(A.SpeedPerturb(aug).map(_element(batch=6)))
    assert not np.array_equal(d["wavs"][0], c["wavs"][0])
    with pytest.raises(ValueError, match="babble"):
        A.Augmenter(settings, seed=0, source=None)


def test_augmenter_pickles_without_its_banks(small_banks):
    import pickle

    aug = A.Augmenter(A.settings_from_config(ALL_ON), seed=3, source=_Source())
    x = _speechlike(SR)
    y = aug(x, 1, 0)
    assert aug._noise is not None and aug._babble is not None
    clone = pickle.loads(pickle.dumps(aug))
    assert clone._noise is None and clone._babble is None
    assert np.array_equal(clone(x, 1, 0), y)  # banks rebuilt from the seed: same draws


def test_utterance_mixing_keeps_the_primary_dominant_and_its_length():
    settings = A.settings_from_config({"mix": {"prob": 1.0}, "clean_copy": True})
    crops = [_speechlike(16000, seed=1), None, _speechlike(9000, seed=2, f0=220.0), _speechlike(12000, seed=3, f0=90.0)]
    element = {"batch": 4, "rows": np.arange(4), "wavs": list(crops)}
    out = A.Augment(A.Augmenter(settings, seed=1)).map(element)
    assert out["wavs"][1] is None
    for k in (0, 2, 3):
        primary, mixed = crops[k], out["wavs"][k]
        assert mixed.size == primary.size and np.array_equal(out["clean"][k], primary)
        changed = np.flatnonzero(mixed != primary)
        assert changed.size > 0
        span = changed[-1] - changed[0] + 1
        assert span <= 0.5 * primary.size  # the secondary covers at most half the primary
        added = (mixed - primary)[changed[0]:changed[-1] + 1]
        ratio_db = 10 * np.log10(np.mean(primary ** 2) / np.mean(added ** 2))
        assert -5.01 <= ratio_db <= 5.01
        # The added segment is a piece of another crop of the batch, never of itself.
        sources = [c for j, c in enumerate(crops) if c is not None and j != k]
        unit = added / np.linalg.norm(added)

        def best_match(c):  # normalised cross-correlation with every window of c
            norms = np.sqrt(np.convolve(c.astype(np.float64) ** 2, np.ones(added.size), "valid"))
            return float((np.correlate(c, unit, "valid") / np.maximum(norms, 1e-12)).max())

        assert max(best_match(c) for c in sources if c.size >= added.size) > 0.999
    again = A.Augment(A.Augmenter(settings, seed=1)).map({"batch": 4, "rows": np.arange(4), "wavs": list(crops)})
    assert all(np.array_equal(again["wavs"][k], out["wavs"][k]) for k in (0, 2, 3))
    with pytest.raises(ValueError, match="max_fraction"):
        A.settings_from_config({"mix": {"prob": 1.0, "max_fraction": 0.8}})
