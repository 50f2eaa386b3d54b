"""AdamW with the wav2vec 2.0 schedule (linear warm-up, then linear decay to 0) and clipping.

Baevski et al. (2020), Sec. 4.2: Adam, learning rate warmed up over the first 8% of updates
to its peak, then decayed linearly. Gradient accumulation is done by the train step (a scan
over micro-batches), so one optimizer update is one step here.

Parameters that got no gradient in a step (a layer LayerDrop skipped) can be held: `hold`
keeps them and their optimizer moments as they were, as PyTorch's optimizers skip a parameter
whose `.grad` is None. An objective asks for it through the `NO_GRADIENT` entry of its metrics.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

NO_GRADIENT = "no_gradient"
"""Reserved key of an objective's metrics: a tree shaped like the parameters with one bool scalar
per leaf, True where the parameter got no gradient this step. The train step removes it from the
metrics and passes it to `hold`."""


def learning_rate_schedule(optim: Any, total_steps: int) -> optax.Schedule:
    """`optim.schedule`: "linear" (warm-up then linear decay to 0), "cosine", or "constant"."""
    peak = float(optim["lr"])
    warmup = int(round(float(optim["warmup_fraction"]) * total_steps))
    decay_steps = max(total_steps - warmup, 1)
    kind = optim["schedule"]
    if kind == "linear":
        after = optax.linear_schedule(peak, 0.0, decay_steps)
    elif kind == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps)
    elif kind == "constant":
        after = optax.constant_schedule(peak)
    else:
        raise ValueError(f"unknown optim.schedule {kind!r}; use 'linear', 'cosine' or 'constant'")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def _decay_mask(params: Any) -> Any:
    """Weight decay on matrices and kernels only, not on biases or norm scales."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) > 1, params)


def make_optimizer(optim: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(clip -> AdamW) and its learning-rate schedule."""
    schedule = learning_rate_schedule(optim, total_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(float(optim["clip_norm"])) if float(optim["clip_norm"]) > 0 else optax.identity(),
        optax.adamw(
            schedule,
            b1=float(optim["b1"]),
            b2=float(optim["b2"]),
            eps=float(optim["eps"]),
            weight_decay=float(optim["weight_decay"]),
            mask=_decay_mask,
        ),
    )
    return tx, schedule


def hold(
    tx: optax.GradientTransformation, no_gradient: Any, old: tuple[Any, Any], new: tuple[Any, Any]
) -> tuple[Any, Any]:
    """Keeps the parameters marked in `no_gradient`, and their optimizer moments, from before the update.

    Args:
        tx: the optimizer (it tells which parts of its state are shaped like the parameters).
        no_gradient: tree shaped like the parameters, a bool scalar per leaf (True = hold).
        old: (params, opt_state) before the update.
        new: (params, opt_state) after it.
    Returns:
        (params, opt_state): `new`, except that held leaves of the parameters and of every
        parameter-shaped part of the optimizer state (Adam's mu and nu) are taken from `old`.
        Step counters are shared by all parameters and still advance, so a held parameter's
        next update uses the global bias correction (PyTorch keeps one count per parameter;
        the two agree once 1 - b2**step is close to 1, after a few hundred steps).
    """
    (params, opt_state), (new_params, new_opt_state) = old, new
    keep = lambda h, n, o: jnp.where(h, o, n)  # noqa: E731
    params = jax.tree.map(keep, no_gradient, new_params, params)
    flags = optax.tree_utils.tree_map_params(
        tx, lambda _, h: h, new_opt_state, no_gradient, transform_non_params=lambda _: None
    )
    opt_state = jax.tree.map(
        lambda h, n, o: n if h is None else keep(h, n, o), flags, new_opt_state, opt_state,
        is_leaf=lambda x: x is None,
    )
    return params, opt_state
