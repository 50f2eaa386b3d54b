"""Agreement between the processes of a multi-process run (`jax.distributed`): barriers and
votes. Every function is a no-op, or the local answer, in a single-process run."""

from __future__ import annotations

import numpy as np

import jax


def barrier(name: str, timeout_s: float = 1800.0) -> None:
    """Waits until every process has reached the barrier `name` (unique per call).

    It goes through the coordination service, not a device collective: CPU collectives (Gloo)
    give up after 30 s, so processes that drift apart by more than that before their first
    collective (one compiling, another reading its programs from a cache) must meet here first.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the coordination client; no public barrier in jax yet

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError("jax.distributed is not initialised, yet there are several processes")
    client.wait_at_barrier(name, int(timeout_s * 1000))


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (all processes must call it together)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def preemption_notice(step: int) -> bool:
    """JAX's preemption sync point: True on every process at the same step once the cluster
    announced a preemption to any of them (all processes call it after every step)."""
    if jax.process_count() == 1:
        return False
    from jax.experimental import multihost_utils

    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # the preemption service is off (jax_enable_preemption_service)
        return False
