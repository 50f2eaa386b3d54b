"""Frozen dataclasses built from a config section, with a clear error for a misspelled key."""

from __future__ import annotations

import dataclasses
from typing import Any


def from_section(cls: type, cfg: Any, section: str) -> Any:
    """`cls(**cfg)` for a ConfigDict or mapping `cfg`; a key that is not a field of `cls` is a
    ValueError naming the section (e.g. "model", "objective.augment") and the valid keys."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {section} config keys {unknown}; valid keys: {sorted(names)}")
    return cls(**d)
