"""In-process eSpeak NG: a ctypes binding to the library shipped by the `espeakng-loader` wheel.

Audio is collected through espeak's synchronous output mode with a synth callback (no
subprocess, no sound device); phonemes come from `espeak_TextToPhonemes` in IPA mode with a
separator between phonemes, so every espeak phoneme becomes one token (see `split_ipa`).
Espeak keeps state in static variables (pitch flutter position, wave phase, a time-seeded
noise generator), so the same text sounds slightly different depending on what was spoken
before. For reproducible audio, `render` loads a fresh copy of the library for every
utterance (dlopen/dlclose costs a few milliseconds) and seeds espeak's noise generator, so an
utterance depends only on its own text, voice, prosody and seed. Use one engine per process.

Reference: eSpeak NG, https://github.com/espeak-ng/espeak-ng (speak_lib.h API).
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import unicodedata
from dataclasses import dataclass

import numpy as np

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_ERRORS = {-1: "EE_INTERNAL_ERROR", 1: "EE_BUFFER_FULL", 2: "EE_NOT_FOUND"}

# Phoneme separator requested from espeak; never part of an IPA symbol.
_SEP = "\u2016"  # DOUBLE VERTICAL LINE
# Stress and syllable marks are prosody, not phones: dropped from phone tokens.
_DROP = set("ˈˌ.‿")

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


class EspeakError(RuntimeError):
    """An espeak call failed (unknown voice, missing data, internal error)."""


@dataclass(frozen=True)
class Prosody:
    """Voice settings in espeak units: rate in words/minute (80-450), pitch and range 0-99,
    volume 0-200 (100 = espeak's default amplitude), wordgap in units of 10 ms."""

    rate: int = 175
    pitch: int = 50
    range: int = 50
    volume: int = 100
    wordgap: int = 0


def library_paths() -> tuple[str, str]:
    """(shared library path, espeak-ng-data folder) from the `espeakng-loader` wheel."""
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - the wheel is a declared dependency
        raise EspeakError("the `espeakng-loader` package is required for speech synthesis "
                          "(pip install espeakng-loader)") from e
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def split_ipa(phonemes: str) -> list[str]:
    """Splits espeak's IPA output into one token per phone.

    Rule: espeak is asked to separate its own phonemes with a separator, so a phone is exactly
    what espeak treats as one phoneme: affricates ("tʃ", "dʒ"), diphthongs ("aɪ"), long vowels
    ("iː"), and any diacritic or modifier letter stay attached to the phone they follow.
    Stress marks (ˈ ˌ), syllable/linking marks and spaces (word boundaries) are dropped.
    Marks that espeak emits on their own (e.g. a lone length mark) are attached to the
    previous phone.

    Args:
        phonemes: espeak IPA output, phonemes separated by `_SEP`, words by spaces.
    Returns:
        list of phone strings (no empty strings, no word-boundary tokens).
    """
    tokens: list[str] = []
    for word in phonemes.split():
        for raw in word.split(_SEP):
            tok = "".join(c for c in raw if c not in _DROP)
            if not tok:
                continue
            if tokens and all(_is_modifier(c) for c in tok):
                tokens[-1] += tok
            else:
                tokens.append(tok)
    return tokens


def _is_modifier(c: str) -> bool:
    return unicodedata.category(c) in ("Mn", "Lm", "Sk") and c not in "ʔʕ"


class Espeak:
    """One espeak engine in this process.

    Example:
        es = Espeak()
        audio = es.synth("hello world", voice="en-us+f3", prosody=Prosody(rate=160))
        phones = es.phonemes("hello world", voice="en-us")
    """

    def __init__(self, lib_path: str | None = None, data_path: str | None = None):
        if lib_path is None or data_path is None:
            default_lib, default_data = library_paths()
            lib_path, data_path = lib_path or default_lib, data_path or default_data
        if not os.path.exists(lib_path):
            raise EspeakError(f"espeak library not found: {lib_path}")
        if not os.path.isdir(data_path):
            raise EspeakError(f"espeak data folder not found: {data_path}")
        self._data_path = data_path
        self._lib = lib = ctypes.CDLL(lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                              ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Terminate.restype = ctypes.c_int
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None
        # Callback chunks of 200 ms keep Python overhead small.
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 200, data_path.encode(),
                                     _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data {data_path}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def close(self) -> None:
        """Shuts espeak down and unloads the library, so that the next engine starts afresh."""
        if self._lib is None:
            return
        self._lib.espeak_Terminate()
        _ctypes.dlclose(self._lib._handle)
        self._lib = None

    def __enter__(self) -> "Espeak":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _on_audio(self, wav, num_samples, events) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def set_voice(self, voice: str) -> None:
        """Selects a voice by name, e.g. "en-us", "de", "en-us+f3" (voice + variant)."""
        if voice == self._voice:
            return
        if "+" in voice:  # espeak silently ignores unknown variants
            variant = voice.split("+", 1)[1]
            if not os.path.isfile(os.path.join(self._data_path, "voices", "!v", variant)):
                raise EspeakError(f"unknown espeak voice variant {variant!r} in {voice!r}; "
                                  f"variants: {sorted(os.listdir(os.path.join(self._data_path, 'voices', '!v')))}")
        err = self._lib.espeak_SetVoiceByName(voice.encode())
        if err != 0:
            self._voice = None
            raise EspeakError(f"unknown espeak voice {voice!r} ({_ERRORS.get(err, err)}); "
                              "see espeak-ng-data/lang for languages and voices/!v for variants")
        self._voice = voice

    def set_prosody(self, prosody: Prosody) -> None:
        for name in ("rate", "pitch", "range", "volume", "wordgap"):
            err = self._lib.espeak_SetParameter(_PARAM[name], int(getattr(prosody, name)), 0)
            if err != 0:
                raise EspeakError(f"espeak_SetParameter({name}) failed ({_ERRORS.get(err, err)})")

    def synth(self, text: str, voice: str, prosody: Prosody = Prosody(),
              seed: int | None = None) -> np.ndarray:
        """Speaks `text`. Returns int16 samples `[samples]` at `self.sample_rate`.

        `seed` seeds espeak's noise generator (otherwise seeded from the clock).
        """
        self.set_voice(voice)
        if seed is not None and self._set_seed is not None:
            self._set_seed(int(seed) & 0x7FFFFFFF)
        self.set_prosody(prosody)
        data = text.encode("utf-8") + b"\0"
        self._chunks = []
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0,
                                     _CHARS_UTF8 | _ENDPAUSE, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed ({_ERRORS.get(err, err)}) for {text!r}")
        self._lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros((0,), np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)

    def phonemes_raw(self, text: str, voice: str) -> str:
        """espeak's IPA for `text`, phonemes separated by `_SEP`, words by spaces."""
        self.set_voice(voice)
        data = ctypes.c_char_p(text.encode("utf-8"))
        ptr = ctypes.pointer(data)
        mode = _PHONEMES_IPA | (ord(_SEP) << 8)
        clauses = []
        # One clause per call; espeak advances the pointer and sets it to NULL at the end.
        while ptr.contents.value is not None:
            out = self._lib.espeak_TextToPhonemes(ptr, _CHARS_UTF8, mode)
            if out is None:
                break
            clauses.append(out.decode("utf-8", errors="replace"))
        return " ".join(c.strip() for c in clauses if c.strip())

    def phonemes(self, text: str, voice: str) -> list[str]:
        """IPA phones of `text`, one token per phone (see `split_ipa`)."""
        return split_ipa(self.phonemes_raw(text, voice))


def render(text: str, voice: str, prosody: Prosody = Prosody(), seed: int = 0,
           phonemes: bool = True) -> tuple[np.ndarray, int, list[str] | None]:
    """Speaks `text` with a freshly loaded engine, so the result is reproducible.

    Returns:
        (int16 audio `[samples]`, sample rate, IPA phones or None when `phonemes` is False).
    """
    with Espeak() as es:
        audio = es.synth(text, voice, prosody, seed=seed)
        phones = es.phonemes(text, voice) if phonemes else None
        return audio, es.sample_rate, phones


def check_voice(voice: str) -> None:
    """Raises EspeakError if espeak does not know `voice`."""
    with Espeak() as es:
        es.set_voice(voice)
