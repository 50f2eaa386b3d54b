"""AdamW with the wav2vec 2.0 schedule (linear warm-up, then linear decay to 0) and clipping.

Baevski et al. (2020), Sec. 4.2: Adam, learning rate warmed up over the first 8% of updates
to its peak, then decayed linearly. Gradient accumulation is done by the train step (a scan
over micro-batches), so one optimizer update is one step here.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


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
