"""The train state: step, parameters, optimizer state, the objective's non-gradient state and
the count of skipped updates."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. `params` is `{"encoder": ..., <objective heads>}`.

    `objective_state` holds what the objective keeps but gradients do not train (frozen k-means
    centroids, a random-projection quantizer, an EMA teacher); `{}` for objectives without it.
    `skipped` counts updates dropped because the loss or the gradients were not finite.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    skipped: jax.Array
    objective_state: Any = flax.struct.field(default_factory=dict)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, objective_state: Any = None) -> "TrainState":
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            skipped=jnp.zeros((), jnp.int32),
            objective_state={} if objective_state is None else objective_state,
        )


def as_dict(state: TrainState) -> dict:
    """The checkpoint form: a plain dict (so converted checkpoints and train states share `params`).

    `objective_state` is written only when the objective has one, so checkpoints of objectives
    without it keep their layout.
    """
    d = {"step": state.step, "params": state.params, "opt_state": state.opt_state, "skipped": state.skipped}
    if jax.tree.leaves(state.objective_state):
        d["objective_state"] = state.objective_state
    return d


def from_dict(d: dict) -> TrainState:
    return TrainState(
        step=d["step"],
        params=d["params"],
        opt_state=d["opt_state"],
        skipped=d["skipped"],
        objective_state=d.get("objective_state", {}),
    )
