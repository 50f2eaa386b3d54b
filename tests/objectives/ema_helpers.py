"""Shared by the EMA-family tests: a few optimizer steps that run an objective as the trainer
does (loss and gradient, update, then `update_state` with what the loss handed it)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import optax

from ssl_jax.objectives import STATE_INPUT
from ssl_jax.training.optimizer import NO_GRADIENT


def start(obj: Any, batch: dict, seed: int = 0) -> tuple[Any, Any]:
    """(params, state) unboxed, with the state started from the params as a fresh run is."""
    params = jax.jit(lambda k, b: nn.unbox(obj.init(k, b)))(jax.random.key(seed), batch)
    state = jax.jit(lambda k, b: nn.unbox(obj.init_state(k, b)))(jax.random.key(seed + 1), batch)
    return params, jax.jit(obj.start_state)(state, params)


def train(obj: Any, batch: dict, steps: int, lr: float = 3e-3, seed: int = 0) -> tuple[Any, Any, list[dict]]:
    """Runs `steps` Adam updates on one batch; returns (params, state, per-step metrics with `loss`)."""
    params, state = start(obj, batch, seed)
    tx = optax.adam(lr)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, state, i):
        (loss, m), g = jax.value_and_grad(obj.loss, has_aux=True)(params, batch, jax.random.fold_in(jax.random.key(seed), i), i, True, state)
        m = dict(m)
        m.pop(NO_GRADIENT, None)
        inputs = m.pop(STATE_INPUT, None)
        updates, opt_state = tx.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, obj.update_state(state, params, i, inputs), dict(m, loss=loss)

    history = []
    for i in range(steps):
        params, opt_state, state, m = step(params, opt_state, state, i)
        history.append(jax.device_get(m))
    return params, state, history
