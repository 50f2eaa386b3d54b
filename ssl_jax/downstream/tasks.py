"""Registry of downstream tasks: which utterances a task reads and what it predicts.

A task turns manifest entries (the corpus' manifest fields, or the same fields written by
`readers`) into targets. Three families share the probe code: `classify` (utterance
labels, mean-pool + linear; several label sets are all-or-nothing, as SUPERB scores
intent classification), `ctc` (token sequences: phonemes or characters) and `verify`
(speaker embeddings scored on trial pairs). The fourth, `abx`, trains nothing: it scores
across-speaker ABX discrimination of words and triphones (`ssl_jax.downstream.abx`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

_TASKS: dict[str, "Task"] = {}


@dataclasses.dataclass(frozen=True)
class Task:
    """One downstream task.

    Attributes:
        name: results key (`pr`, `ks`, ...).
        family: `classify`, `ctc` or `verify`.
        metric: primary metric name (`acc`, `per`, `wer`, `eer`).
        title: what the table prints.
        select: which manifest entries belong to the task.
        target: entry -> tuple of labels (classify), list of tokens (ctc) or speaker (verify).
        lower_is_better: for the primary metric.
        slots: classify tasks with several label sets: the name of each set.
    """

    name: str
    family: str
    metric: str
    title: str
    select: Callable[[dict[str, Any]], bool]
    target: Callable[[dict[str, Any]], Any]
    lower_is_better: bool = False
    slots: tuple[str, ...] | None = None

    def lower_is_better_for(self, metric: str) -> bool:
        """Direction of any reported metric: accuracies go up, error rates go down."""
        return self.lower_is_better and not metric.startswith("acc")


FAMILIES = ("classify", "ctc", "verify", "abx")


def register(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    if task.family not in FAMILIES:
        raise ValueError(f"unknown task family {task.family!r}")
    _TASKS[task.name] = task
    return task


def get(name: str) -> Task:
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(_TASKS)}")
    return _TASKS[name]


def names() -> list[str]:
    return list(_TASKS)


def is_english(entry: dict[str, Any]) -> bool:
    return str(entry.get("language", "en")).lower().startswith("en")


def normalize_text(text: str) -> str:
    """Lower case, letters and apostrophes only, single spaces (the ASR target)."""
    text = re.sub(r"[^a-z' ]+", " ", text.lower())
    return " ".join(text.split())


def asr_tokens(entry: dict[str, Any]) -> list[str]:
    """Character tokens of the normalised transcript; '|' marks word boundaries."""
    return ["|" if c == " " else c for c in normalize_text(entry["text"])]


def _sentence(entry: dict[str, Any]) -> bool:
    """Read sentences (LibriSpeech-like), not keywords, commands or isolated words."""
    return entry.get("task", "sentence") == "sentence"


def _speech(entry: dict[str, Any]) -> bool:
    return entry.get("task", "sentence") != "keyword" or entry.get("keyword") != "_silence_"


register(Task(
    name="pr", family="ctc", metric="per", title="PR (PER)", lower_is_better=True,
    select=lambda e: is_english(e) and _sentence(e) and bool(e.get("phonemes")),
    target=lambda e: list(e["phonemes"])))
register(Task(
    name="ks", family="classify", metric="acc", title="KS (acc)",
    select=lambda e: e.get("task") == "keyword" and e.get("keyword") is not None,
    target=lambda e: (e["keyword"],)))
register(Task(
    name="sid", family="classify", metric="acc", title="SID (acc)",
    select=lambda e: _speech(e) and e.get("speaker") is not None,
    target=lambda e: (e["speaker"],)))
register(Task(
    name="ic", family="classify", metric="acc", title="IC (acc)",
    select=lambda e: e.get("task") == "intent" and e.get("intent") is not None,
    target=lambda e: (e["intent"]["action"], e["intent"]["object"], e["intent"]["location"]),
    slots=("action", "object", "location")))
register(Task(
    name="er", family="classify", metric="acc", title="ER (acc)",
    # On the embedded corpus these are prosody classes, not emotions; readers.iemocap
    # writes its emotion labels into the same `style` field.
    select=lambda e: _speech(e) and e.get("style") is not None,
    target=lambda e: (e["style"],)))
register(Task(
    name="asr", family="ctc", metric="wer", title="ASR (WER)", lower_is_better=True,
    select=lambda e: is_english(e) and _sentence(e) and bool(normalize_text(e.get("text") or "")),
    target=asr_tokens))
register(Task(
    name="asv", family="verify", metric="eer", title="ASV (EER)", lower_is_better=True,
    select=lambda e: _speech(e) and e.get("speaker") is not None,
    target=lambda e: e["speaker"]))
register(Task(
    name="abx", family="abx", metric="word", title="ABX across speakers (error)", lower_is_better=True,
    select=lambda e: True, target=lambda e: None))
