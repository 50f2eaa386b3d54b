"""The device mesh: axes `data`, `fsdp`, `tensor` sized from the config's `mesh.*` (-1 = the rest)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax

AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, int, int]:
    """Resolves `mesh.data/fsdp/tensor` (one of them may be -1) against `num_devices`."""
    sizes = [int(mesh_config[a]) for a in AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(AXES, sizes))}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive or -1, got {dict(zip(AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices do not split into mesh {dict(zip(AXES, sizes))}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, there are {num_devices}")
    return tuple(sizes)


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A Mesh over all (or the given) devices with axes ("data", "fsdp", "tensor").

    Axis types are Auto on purpose: parameters and batches carry explicit shardings and
    the compiler propagates them through the model, whose code names logical axes only.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES), devices=devices)
