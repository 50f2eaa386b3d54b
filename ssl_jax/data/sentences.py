"""Seeded text generators for the embedded corpus: sentences, keywords and spoken commands.

Vocabularies come from the frequency-ranked word lists of the `wordfreq` package, filtered to
clean lower-case words written in Latin letters. Sentences are word sequences drawn with a
Zipf-like preference for frequent words (they are not grammatical; they exercise the
phonology of each language). Keywords follow Speech Commands (Warden, 2018, arXiv:1804.03209)
and commands follow Fluent Speech Commands (Lugosch et al., 2019, arXiv:1904.03670):
action / object / location slots. `ABX_WORDS` are minimal-pair words for ABX discrimination.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

import numpy as np

# Speech Commands' ten command words.
KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
KEYWORD_LABELS: tuple[str, ...] = KEYWORDS + (SILENCE, UNKNOWN)

MIN_VOCAB = 2000
DEFAULT_VOCAB = 3000

# (action, object) -> phrasings; "{obj}" is the spoken object, "{loc}" an optional location.
_ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # action: (objects, templates)
    "activate": (("lights", "lamp", "music", "heat"),
                 ("turn on the {obj}{loc}", "switch on the {obj}{loc}", "turn the {obj} on{loc}",
                  "put the {obj} on{loc}")),
    "deactivate": (("lights", "lamp", "music", "heat"),
                   ("turn off the {obj}{loc}", "switch off the {obj}{loc}",
                    "turn the {obj} off{loc}", "stop the {obj}{loc}")),
    "increase": (("heat", "volume", "lights"),
                 ("turn up the {obj}{loc}", "increase the {obj}{loc}", "raise the {obj}{loc}",
                  "more {obj}{loc} please")),
    "decrease": (("heat", "volume", "lights"),
                 ("turn down the {obj}{loc}", "decrease the {obj}{loc}", "lower the {obj}{loc}",
                  "less {obj}{loc} please")),
    "bring": (("newspaper", "juice", "socks", "shoes"),
              ("bring me the {obj}", "fetch my {obj}", "get me the {obj}", "i need my {obj}")),
    "change_language": (("english", "german", "chinese", "korean"),
                        ("switch the language to {obj}", "set my device to {obj}",
                         "change the language to {obj}", "use {obj}")),
}
LOCATIONS: tuple[str, ...] = ("none", "kitchen", "bedroom", "washroom")
# Only these objects are placed in a room, as in Fluent Speech Commands.
_LOCATED = ("lights", "lamp", "heat")


def intent_labels() -> dict[str, list[str]]:
    """The label sets of the three intent slots."""
    objects = sorted({o for objs, _ in _ACTIONS.values() for o in objs})
    return {"action": sorted(_ACTIONS), "object": objects, "location": list(LOCATIONS)}


def _is_clean(word: str) -> bool:
    return (len(word) >= 2 and word.isalpha() and word == word.lower()
            and all(unicodedata.name(c, "").startswith("LATIN") for c in word))


@functools.lru_cache(maxsize=None)
def vocabulary(lang: str, size: int = DEFAULT_VOCAB) -> tuple[str, ...]:
    """The `size` most frequent clean words of `lang` (a wordfreq code: "en", "de", ...).

    Raises:
        ValueError: the language is unknown to wordfreq or has fewer than `size` clean words.
    """
    import wordfreq

    if lang not in wordfreq.available_languages():
        raise ValueError(f"wordfreq has no word list for language {lang!r}")
    words = [w for w in wordfreq.top_n_list(lang, size * 4) if _is_clean(w)]
    if len(words) < size:
        raise ValueError(f"only {len(words)} clean words for {lang!r}, need {size}")
    return tuple(words[:size])


@functools.lru_cache(maxsize=None)
def _word_probs(n: int) -> np.ndarray:
    # Zipf-like with a flattened head, so that rarer words (and sounds) still appear.
    p = (np.arange(n) + 50.0) ** -0.8
    return p / p.sum()


def sentence(rng: np.random.Generator, lang: str, num_words: int) -> str:
    """A sequence of `num_words` words of `lang`, capitalised, ending with a full stop."""
    if num_words < 1:
        raise ValueError(f"num_words must be >= 1, got {num_words}")
    vocab = vocabulary(lang)
    idx = rng.choice(len(vocab), size=num_words, p=_word_probs(len(vocab)))
    text = " ".join(vocab[i] for i in idx)
    return text[0].upper() + text[1:] + "."


@functools.lru_cache(maxsize=None)
def unknown_words() -> tuple[str, ...]:
    """English single words for the `_unknown_` keyword class (no keyword among them)."""
    return tuple(w for w in vocabulary("en") if 3 <= len(w) <= 7 and w not in KEYWORDS)


def keyword(rng: np.random.Generator, labels: Sequence[str] = KEYWORDS + (UNKNOWN,)
            ) -> tuple[str, str]:
    """A (label, spoken word) pair; label `_unknown_` speaks another English word."""
    label = labels[int(rng.integers(len(labels)))]
    return label, keyword_word(rng, label)


def keyword_word(rng: np.random.Generator, label: str) -> str:
    """The word spoken for keyword `label`: the keyword itself, or for `_unknown_` another
    English word."""
    if label == UNKNOWN:
        words = unknown_words()
        return words[int(rng.integers(len(words)))]
    if label not in KEYWORDS:
        raise ValueError(f"no spoken word for keyword label {label!r}")
    return label


def intent(rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A spoken English command and its {"action", "object", "location"} labels."""
    actions = sorted(_ACTIONS)
    action = actions[int(rng.integers(len(actions)))]
    objects, _ = _ACTIONS[action]
    obj = objects[int(rng.integers(len(objects)))]
    location = "none"
    if obj in _LOCATED:
        location = LOCATIONS[int(rng.integers(len(LOCATIONS)))]
    slots = {"action": action, "object": obj, "location": location}
    return intent_text(rng, slots), slots


@functools.lru_cache(maxsize=None)
def _intents() -> tuple[dict[str, str], ...]:
    return tuple({"action": a, "object": o, "location": loc}
                 for a in sorted(_ACTIONS) for o in _ACTIONS[a][0]
                 for loc in (LOCATIONS if o in _LOCATED else ("none",)))


def intents() -> list[dict[str, str]]:
    """Every intent (action, object, location) the command grammar can express (52)."""
    return [dict(x) for x in _intents()]


def intent_text(rng: np.random.Generator, slots: dict[str, str]) -> str:
    """A phrasing of the intent `slots` ({"action", "object", "location"})."""
    if slots not in _intents():
        raise ValueError(f"the command grammar cannot express the intent {slots}")
    templates = _ACTIONS[slots["action"]][1]
    template = templates[int(rng.integers(len(templates)))]
    loc_text = "" if slots["location"] == "none" else f" in the {slots['location']}"
    return template.format(obj=slots["object"], loc=loc_text)


# Short common English words, many differing in one phone from another (vowels in b_t, s_t,
# k_t, p_t; onsets in _an, _in; codas in ba_, di_): the material of the ABX splits of the
# evaluation corpus (Schatz et al., 2013, "Evaluating speech features with the Minimal-Pair
# ABX task"). Every word has its own espeak phonemes in each English accent of the corpora.
ABX_WORDS: tuple[str, ...] = (
    "bit", "bet", "bat", "but", "bought", "boat", "boot", "beat", "bite", "bout",
    "pit", "pet", "pat", "pot", "put",
    "sit", "set", "sat", "seat", "site", "sought",
    "kit", "cat", "cut", "coat", "kite", "caught",
    "pan", "ban", "tan", "can", "fan", "van", "man", "ran",
    "pin", "bin", "tin", "fin", "win", "thin", "sin",
    "bad", "bag", "back", "bath",
    "dig", "dug", "dog", "deep",
    "ship", "sip", "chip", "zip",
)
# Joined between ABX words in running speech.
FUNCTION_WORDS: tuple[str, ...] = ("the", "a", "and", "in", "on", "is", "to", "his")


def abx_sentence(rng: np.random.Generator, num_words: int) -> str:
    """`num_words` words of `ABX_WORDS`, each but the last followed by a function word with
    probability one half (not counted), capitalised, ending with a full stop."""
    if num_words < 1:
        raise ValueError(f"num_words must be >= 1, got {num_words}")
    words = []
    for k in range(num_words):
        words.append(ABX_WORDS[int(rng.integers(len(ABX_WORDS)))])
        if k < num_words - 1 and rng.random() < 0.5:
            words.append(FUNCTION_WORDS[int(rng.integers(len(FUNCTION_WORDS)))])
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."
