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
import difflib
import os
import unicodedata
from dataclasses import dataclass

import numpy as np

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_WORD, _EVENT_END, _EVENT_PHONEME = 1, 5, 7
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

class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_ubyte * 8)]


class _Event(ctypes.Structure):
    """speak_lib.h `espeak_EVENT` (40 bytes on x86_64: six 4-byte ints, a pointer, the union)."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
    """An espeak call failed (unknown voice, missing data, internal error)."""


@dataclass(frozen=True)
class Event:
    """One espeak event: `type` (word 1, end of clause 5, phoneme 7), the 1-based character
    position and length of its word in the text, its position in the audio in milliseconds
    and in samples, and for phoneme events the IPA name (with stress marks; empty for a
    pause)."""

    type: int
    text_position: int
    length: int
    audio_position: int
    sample: int
    name: str


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


# espeak's F0 range (Hz) of a voice whose files set none (voices.c, VoiceReset).
DEFAULT_PITCH = (80, 118)


def variant_file(variant: str, data_path: str | None = None) -> str:
    """Path of the voice variant file `variant` (as in "en-us+f3") in espeak-ng-data.

    Raises:
        EspeakError: espeak has no such variant.
    """
    if data_path is None:
        data_path = library_paths()[1]
    folder = os.path.join(data_path, "voices", "!v")
    path = os.path.join(folder, variant)
    if not variant or os.path.dirname(variant) or not os.path.isfile(path):
        raise EspeakError(f"unknown espeak voice variant {variant!r}; "
                          f"variants: {sorted(os.listdir(folder))}")
    return path


def variant_pitch(variant: str) -> tuple[int, int]:
    """The F0 range `(low, high)` in Hz that a voice variant's `pitch` line sets (espeak
    speaks between them at pitch setting 50), `DEFAULT_PITCH` when its file has none."""
    pitch = DEFAULT_PITCH
    with open(variant_file(variant), encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.split("//")[0].split()
            if len(words) >= 3 and words[0] == "pitch":
                pitch = (int(words[1]), int(words[2]))
    return pitch


def split_ipa(phonemes: str) -> list[str]:
    """Splits espeak's IPA output into one token per phone.

    Rule: espeak is asked to separate its own phonemes with a separator, so a phone is exactly
    what espeak treats as one phoneme: affricates ("tʃ", "dʒ"), diphthongs ("aɪ"), long vowels
    ("iː"), and any diacritic or modifier letter stay attached to the phone they follow.
    Stress marks (ˈ ˌ), syllable/linking marks, spaces (word boundaries) and language
    switches ("(en)" where espeak speaks a foreign word with English rules) are dropped.
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
            tok = _phone_token(raw)
            if not tok:
                continue
            if tokens and all(_is_modifier(c) for c in tok):
                tokens[-1] += tok
            else:
                tokens.append(tok)
    return tokens


def _phone_token(raw: str) -> str:
    """One espeak phoneme name as a phone token: stress and syllable marks dropped; a
    language switch such as "(en)" (espeak speaking a foreign word) is no phone: ""."""
    tok = "".join(c for c in raw if c not in _DROP)
    return "" if tok.startswith("(") and tok.endswith(")") else tok


def _is_modifier(c: str) -> bool:
    return unicodedata.category(c) in ("Mn", "Lm", "Sk") and c not in "ʔʕ"


def text_words(text: str) -> list[str]:
    """The words of `text`: whitespace-separated, punctuation stripped from both ends."""
    words = []
    for raw in text.split():
        i, j = 0, len(raw)
        while i < j and unicodedata.category(raw[i]).startswith("P"):
            i += 1
        while j > i and unicodedata.category(raw[j - 1]).startswith("P"):
            j -= 1
        if i < j:
            words.append(raw[i:j])
    return words


# ----------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Alignment:
    """Phones and words of one utterance with `[start, end)` sample positions.

    Attributes:
        phones: `((phone, start, end), ...)` in time order; the phones are the utterance's
            `split_ipa` tokens (the same list as `Espeak.phonemes` of the text).
        words: `((word, start, end), ...)`, the words of `text_words(text)`; a word spans its
            phones.
    """

    phones: tuple[tuple[str, int, int], ...]
    words: tuple[tuple[str, int, int], ...]

    def mapped(self, scale: float, offset: int, length: int) -> "Alignment":
        """Positions `round(p * scale) + offset`, clipped to `[0, length]`: the alignment of
        the audio after resampling by `scale` and shifting by `offset` samples."""
        def f(p: int) -> int:
            return int(min(max(round(p * scale) + offset, 0), length))

        return Alignment(tuple((x, f(s), f(e)) for x, s, e in self.phones),
                         tuple((x, f(s), f(e)) for x, s, e in self.words))

    def as_dict(self) -> dict[str, list[list]]:
        """`{"phones": [[phone, start, end], ...], "words": [[word, start, end], ...]}`."""
        return {"phones": [list(p) for p in self.phones], "words": [list(w) for w in self.words]}


def _base(phone: str) -> str:
    """A phone without length marks and modifiers: what two spellings of one sound share."""
    return "".join(c for c in phone if not _is_modifier(c)) or phone


def _partners(a: list[str], b: list[str]) -> list[list[int]]:
    """For each token of `a`, the indices of the tokens of `b` it corresponds to.

    Tokens are compared by `_base`; matching runs pair one to one (difflib's longest matching
    blocks), a replaced stretch pairs its tokens in order (proportionally when the two
    stretches differ in length), and tokens that only `a` has get no partner.
    """
    matcher = difflib.SequenceMatcher(None, [_base(x) for x in a], [_base(x) for x in b],
                                      autojunk=False)
    out: list[list[int]] = [[] for _ in a]
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                out[i1 + k] = [j1 + k]
        elif tag == "replace":
            n, m = i2 - i1, j2 - j1
            for k in range(n):
                lo, hi = (k * m) // n, ((k + 1) * m) // n
                out[i1 + k] = list(range(j1 + lo, j1 + max(hi, lo + 1)))
    return out


def _event_phones(events: list[Event], num_samples: int) -> list[list]:
    """Phones timed by espeak's phoneme events: `[[phone, start, end], ...]`.

    A phone lasts from its event to the next event of any kind (phone, pause, word, end of
    clause). Phoneme events with an empty name (and language switches) are not phones: before
    a word event, the end of a clause or another such event they are pauses and end the phone
    before them; between two phones (espeak's brief transitions, e.g. before an Italian "r")
    their sound continues the phone before them. A name that is only a modifier (a lone
    length mark, palatalisation) extends the phone before it, as in `split_ipa`.
    """
    def named(k: int) -> str:
        ev = events[k]
        return _phone_token(ev.name) if ev.type == _EVENT_PHONEME else ""

    segs: list[list] = []
    open_phone = None
    for k, ev in enumerate(events):
        sample = min(max(ev.sample, 0), num_samples)
        tok = named(k)
        if (ev.type == _EVENT_PHONEME and not tok and k + 1 < len(events) and named(k + 1)
                and not all(_is_modifier(c) for c in named(k + 1))):
            continue
        if open_phone is not None:
            open_phone[2] = max(sample, open_phone[1])
            open_phone = None
        if not tok:
            continue
        if segs and all(_is_modifier(c) for c in tok) and segs[-1][2] == sample:
            segs[-1][0] += tok
        else:
            segs.append([tok, sample, sample])
        open_phone = segs[-1]
    if open_phone is not None:
        open_phone[2] = num_samples
    return segs


def _trim_zeros(audio: np.ndarray, start: int, end: int, quiet: float = 0.0) -> tuple[int, int]:
    """`[start, end)` without the silent samples (magnitude at most `quiet`; 0: espeak's exact
    zeros) at either end; kept as is when the whole segment is silent."""
    loud = np.flatnonzero(np.abs(audio[start:end].astype(np.int32)) > quiet)
    if loud.size == 0:
        return start, end
    return start + int(loud[0]), start + int(loud[-1]) + 1


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def align(audio: np.ndarray, events: list[Event], phones: list[str],
          word_phones: list[tuple[str, list[str]]], silence: float = 0.0,
          onset: bool = False) -> Alignment:
    """Times `phones` and words with espeak's events.

    Rule: the labels are `phones` (espeak_TextToPhonemes, `split_ipa` tokens); their times
    come from the phoneme events (`_event_phones`) paired by `_partners`. The two sequences
    differ where synthesis folds a length mark into duration ("tː" is event "t") or where an
    event's name is cut at 8 bytes (Portuguese "ɐ̃ʊ̃"): measured on 700 corpus utterances,
    95 of 16,831 phones (0.6%) in 47 utterances, none in English, 7% of the Finnish phones.
    A paired phone takes the span of its event phones. A phone without a partner, or whose
    event span is empty or silent (espeak reports a sonorant after a vowel, as the "l" of
    "all", where the vowel's sound that carries both ends), shares the span of the phone
    before it (after it, for the first phone) equally. Each phone is trimmed of espeak's
    silence at its ends, so a plosive's closure before its release belongs to no phone.
    Silence is exact zeros; with `silence` > 0, a span is silent when its RMS is at most that
    fraction of the utterance's peak, and trimming takes off samples no louder than it: voice
    variants with an echo (f2-f5, m2 ...) leave a faint tail in a closure, which exact zeros
    would time as the phone espeak reports there. With `onset`, sound before the first
    phone's event belongs to the first phone (espeak sounds an utterance-initial trill up to
    ~40 ms before its event at slow rates). Words: every word of the text, phonemised alone (`word_phones`), is paired with the
    utterance's phones the same way (espeak joins some words, such as "on the", into one word
    event, so word events do not always give word boundaries); a word spans from the start
    of its first phone to the end of its last.

    Args:
        audio: `[samples]` int16 audio from `Espeak.synth_events`.
        events: the events of that call.
        phones: `split_ipa` tokens of the text.
        word_phones: `(word, its split_ipa tokens)` for each word of the text.
        silence: the level, as a fraction of the peak, at or below which a span (its RMS)
            or a sample at a phone's end is silent; 0: exact zeros only.
        onset: start the first phone where the sound starts, when that is earlier.
    Returns:
        the alignment, positions in samples of `audio`.
    """
    n = int(audio.shape[0])
    magnitude = np.abs(audio.astype(np.int32))
    quiet = silence * float(magnitude.max()) if n else 0.0
    timed = _event_phones(events, n)
    spans: list[list[int] | None] = []
    for partners in _partners(phones, [t[0] for t in timed]):
        span = [timed[partners[0]][1], timed[partners[-1]][2]] if partners else None
        # espeak reports a sonorant after a vowel (the "l" of "all") at the end of the vowel's
        # sound, which carries both: an empty or silent event span is no timing.
        if span is not None and _rms(audio[span[0]:span[1]]) <= quiet:
            span = None
        spans.append(span)
    # Phones that share one event phone, or have none, split the time of their host.
    groups: list[list[int]] = []
    for i, span in enumerate(spans):
        if span is not None and not (groups and spans[groups[-1][0]] == span):
            groups.append([i])
        elif groups:
            groups[-1].append(i)
        else:  # leading phones without a partner: hosted by the first timed phone
            groups.append([i])
    if groups and spans[groups[0][0]] is None:
        lead = groups.pop(0)
        if groups:
            groups[0] = lead + groups[0]
    out_phones = []
    for group in groups:
        host = next((spans[i] for i in group if spans[i] is not None), None)
        if host is None:  # no event phone at all
            return Alignment((), ())
        s, e = _trim_zeros(audio, *host, quiet)
        for k, i in enumerate(group):
            a, b = s + (e - s) * k // len(group), s + (e - s) * (k + 1) // len(group)
            a, b = _trim_zeros(audio, a, b, quiet)
            out_phones.append((phones[i], a, b))
    if onset and out_phones:
        sound = np.flatnonzero(magnitude > quiet)
        if sound.size and int(sound[0]) < out_phones[0][1]:
            out_phones[0] = (out_phones[0][0], int(sound[0]), out_phones[0][2])

    flat = [p for _, ps in word_phones for p in ps]
    owner = [w for w, (_, ps) in enumerate(word_phones) for _ in ps]
    word_of: list[int | None] = [owner[p[0]] if p else None
                                 for p in _partners(phones, flat)]
    for i in range(len(word_of)):  # phones only the utterance has: the word before (or after)
        if word_of[i] is None:
            word_of[i] = word_of[i - 1] if i > 0 else next((w for w in word_of if w is not None), 0)
    words = []
    for w, (word, _) in enumerate(word_phones):
        mine = [out_phones[i] for i in range(len(out_phones)) if word_of[i] == w]
        if mine:
            words.append((word, mine[0][1], mine[-1][2]))
    return Alignment(tuple(out_phones), tuple(words))


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
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 200, data_path.encode(),
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data {data_path}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[Event] = []
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
        i = 0
        while events and events[i].type != 0:  # the list ends with LIST_TERMINATED
            ev = events[i]
            i += 1
            if ev.type == _EVENT_PHONEME:
                # A name that fills all 8 bytes has no terminating zero.
                name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", errors="ignore")
            elif ev.type in (_EVENT_WORD, _EVENT_END):
                name = ""
            else:
                continue
            self._events.append(Event(ev.type, ev.text_position, ev.length, ev.audio_position,
                                      ev.sample, name))
        return 0

    def set_voice(self, voice: str) -> None:
        """Selects a voice by name, e.g. "en-us", "de", "en-us+f3" (voice + variant)."""
        if voice == self._voice:
            return
        if "+" in voice:  # espeak silently ignores unknown variants
            variant_file(voice.split("+", 1)[1], self._data_path)
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
        return self.synth_events(text, voice, prosody, seed)[0]

    def synth_events(self, text: str, voice: str, prosody: Prosody = Prosody(),
                     seed: int | None = None) -> tuple[np.ndarray, list[Event]]:
        """Speaks `text`: int16 samples `[samples]` and espeak's word, end-of-clause and
        phoneme events in the order espeak reports them (see `align`)."""
        self.set_voice(voice)
        if seed is not None and self._set_seed is not None:
            self._set_seed(int(seed) & 0x7FFFFFFF)
        self.set_prosody(prosody)
        data = text.encode("utf-8") + b"\0"
        self._chunks, self._events = [], []
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0,
                                     _CHARS_UTF8 | _ENDPAUSE, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed ({_ERRORS.get(err, err)}) for {text!r}")
        self._lib.espeak_Synchronize()
        (chunks, self._chunks), (events, self._events) = (self._chunks, []), (self._events, [])
        if not chunks:
            return np.zeros((0,), np.int16), events
        return np.concatenate(chunks).astype(np.int16, copy=False), events

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


@dataclass(frozen=True)
class Rendering:
    """One utterance from `render_aligned`: int16 `audio` `[samples]` at `sample_rate`, its
    IPA `phones` (`split_ipa` tokens) and their `alignment` in samples of `audio`."""

    audio: np.ndarray
    sample_rate: int
    phones: list[str]
    alignment: Alignment


def render_aligned(text: str, voice: str, prosody: Prosody = Prosody(), seed: int = 0,
                   silence: float = 0.0, onset: bool = False) -> Rendering:
    """As `render`, with the phone and word alignment of the audio (see `align`, which takes
    `silence` and `onset`)."""
    with Espeak() as es:
        audio, events = es.synth_events(text, voice, prosody, seed=seed)
        phones = es.phonemes(text, voice)
        word_phones = [(w, es.phonemes(w, voice)) for w in text_words(text)]
        return Rendering(audio, es.sample_rate, phones,
                         align(audio, events, phones, word_phones, silence, onset))


def check_voice(voice: str) -> None:
    """Raises EspeakError if espeak does not know `voice`."""
    with Espeak() as es:
        es.set_voice(voice)
