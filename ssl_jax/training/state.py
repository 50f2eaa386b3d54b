"""The train state: step, parameters, optimizer state and the count of skipped updates."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. `params` is `{"encoder": ..., <objective heads>}`.

    `skipped` counts updates dropped because the loss or the gradients were not finite.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    skipped: jax.Array

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), skipped=jnp.zeros((), jnp.int32))


def as_dict(state: TrainState) -> dict:
    """The checkpoint form: a plain dict (so converted checkpoints and train states share `params`)."""
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state, "skipped": state.skipped}


def from_dict(d: dict) -> TrainState:
    return TrainState(step=d["step"], params=d["params"], opt_state=d["opt_state"], skipped=d["skipped"])
