"""Self-supervised objectives, looked up by the config's `objective.name`.

An objective is a class built from the full config (subclass `Objective`), with
`init(rng, batch) -> params` and `loss(params, batch, rng, step, train, state) -> (loss,
metrics)`; `metrics` is a flat dict of scalars. Adding one is one file here plus one config.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

_REGISTRY: dict[str, type] = {}

STATE_INPUT = "state_input"  # metrics key: batch-major arrays the loss hands to `update_state`


# An accuracy under this multiple of chance after warm-up means the prediction task collapsed.
CHANCE_MARGIN = 1.5


def accuracy_floor(chance: float) -> dict[str, float]:
    """`floors` entry for an objective whose `accuracy` metric has chance level `chance`."""
    return {"accuracy": CHANCE_MARGIN * float(chance)}


class Objective:
    """What the trainer calls; an objective overrides `init` and `loss`, and the rest as needed.

    Attributes:
        SUMMARY: metric name -> label of the eval metrics the run's summary prints (the first
            also shows on the progress bar).
    """

    SUMMARY: dict[str, str] = {}
    # metric -> minimum (codebook perplexity, target spread, accuracy above chance); the trainer
    # warns when a logged value falls under it after warm-up, and can stop (train.collapse_patience).
    floors: dict[str, float] = {}

    def prepare(self, data_path: str, workdir: str) -> None:
        """Host-side work before `init_state` (loading or fitting k-means codebooks); runs once
        per process with the run's shard folder and workdir."""
        del data_path, workdir

    def init(self, rng: Any, batch: dict) -> Any:
        """Parameters for a batch of this shape (`audio` [batch, samples], `audio_mask`),
        boxed with logical axis names."""
        raise NotImplementedError

    def init_state(self, rng: Any, batch: dict) -> Any:
        """Non-gradient state (frozen centroids, a random projection, an EMA teacher), boxed
        with logical axis names like the parameters; `{}` when there is none."""
        del rng, batch
        return {}

    def start_state(self, state: Any, params: Any) -> Any:
        """The non-gradient state for a run starting from `params` (fresh or warm-started),
        inside a jitted call; an EMA teacher copies the student here."""
        del params
        return state

    def loss(self, params: Any, batch: dict, rng: Any, step: Any, train: bool, state: Any) -> tuple[Any, dict]:
        """(loss scalar, metrics); metrics hold `masked_frames`, the weight of this batch in
        eval means, and may hold `optimizer.NO_GRADIENT` and `STATE_INPUT`."""
        raise NotImplementedError

    def update_state(self, state: Any, params: Any, step: Any, inputs: Any = None) -> Any:
        """The non-gradient state after an update to `params` (inside the jitted step).

        `inputs`: what the loss returned under `STATE_INPUT` (leaves with a leading batch
        axis; with gradient accumulation the micro-batches' are concatenated), else None.
        """
        del params, step, inputs
        return state


def layerdrop_metrics(params: Any, sown: dict) -> dict:
    """`dropped_layers` and `optimizer.NO_GRADIENT` (the skipped layers' parameters) from what
    the encoder sowed under `LAYERDROP_COLLECTION`; `{}` when LayerDrop did not run.

    Expects the encoder's parameters under `params["encoder"]["encoder"]`.
    """
    import jax
    import jax.numpy as jnp

    from ssl_jax.models.transformer import LAYERDROP_COLLECTION, LAYERS_KEPT, dropped_layers_mask
    from ssl_jax.training.optimizer import NO_GRADIENT

    kept = sown.get(LAYERDROP_COLLECTION, {}).get("encoder", {}).get("encoder", {}).get(LAYERS_KEPT)
    if kept is None:
        return {}
    kept = kept[0]
    no_gradient = jax.tree.map(lambda _: jnp.zeros((), bool), params)
    no_gradient["encoder"]["encoder"] = dropped_layers_mask(params["encoder"]["encoder"], kept)
    return {"dropped_layers": (~kept).sum().astype(jnp.float32), NO_GRADIENT: no_gradient}


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
