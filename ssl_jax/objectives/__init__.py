"""Self-supervised objectives, looked up by the config's `objective.name`.

An objective is a class built from the full config, `Objective(config)`, with
`init(rng, batch) -> params` and `loss(params, batch, rng, step, train) -> (loss, metrics)`;
`metrics` is a flat dict of scalars. Adding one is one file here plus one config.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: registers an objective under `name`."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"objective {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        _REGISTRY[name] = cls
        return cls

    return wrap


def get(name: str) -> type:
    """The objective class registered as `name`; imports `ssl_jax.objectives.<name>` on demand."""
    if name not in _REGISTRY:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    if name not in _REGISTRY:
        raise KeyError(f"unknown objective {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build(config: Any) -> Any:
    """Builds the objective named by `config.objective.name` from the full config."""
    return get(config["objective"]["name"])(config)
