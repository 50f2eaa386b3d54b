"""Logical axis names -> mesh axes, and the shardings of parameters, optimizer state and batches.

One rules table (t5x / MaxText `logical_axis_rules`) maps the names that model code puts on
parameters and activations (`ssl_jax.models.LOGICAL_AXES`) to the mesh axes `data`, `fsdp`,
`tensor`. A dimension that the chosen mesh axes do not divide stays replicated.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec as P

# name -> mesh axes (tried in order; axes already used by an earlier dimension are skipped).
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("frames", None),
    ("samples", None),
    ("embed", ("fsdp",)),
    ("mlp", ("tensor",)),
    ("heads", ("tensor",)),
    ("kv", None),
    ("vocab", ("tensor",)),
    ("conv_channels", ("tensor",)),
    ("conv_kernel", None),
    ("conv_in", ("fsdp",)),
    ("codevector", None),
    ("codebook", ("tensor",)),
    ("buckets", None),
    ("classes", None),
    ("layers", None),
)


def rules_dict(rules=DEFAULT_RULES) -> dict[str, tuple[str, ...] | None]:
    return {name: (tuple(axes) if axes else None) for name, axes in rules}


def spec_for(shape: tuple[int, ...], names: tuple[str | None, ...] | None, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> P:
    """PartitionSpec for an array of `shape` whose dimensions carry logical `names`."""
    table = rules_dict(rules)
    if names is None:
        return P(*([None] * len(shape)))
    if len(names) != len(shape):
        raise ValueError(f"logical names {names} do not match shape {shape}")
    used: set[str] = set()
    spec = []
    for dim, name in zip(shape, names):
        if name is not None and name not in table:
            raise KeyError(f"logical axis {name!r} has no sharding rule; known: {sorted(table)}")
        axes = tuple(a for a in (table.get(name) or ()) if a not in used and mesh.shape[a] > 1)
        size = math.prod(mesh.shape[a] for a in axes)
        if axes and dim % size == 0:
            spec.append(axes if len(axes) > 1 else axes[0])
            used.update(axes)
        else:
            spec.append(None)
    return P(*spec)


# --------------------------------------------------------------------------- activations

# (mesh, rules) while a step function is traced for that mesh (`activations_on`); None outside.
_ACTIVE: contextvars.ContextVar[tuple[jax.sharding.Mesh, Any] | None] = contextvars.ContextVar(
    "ssl_jax_activation_mesh", default=None)


@contextlib.contextmanager
def activation_mesh(mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> Iterator[None]:
    """Within this context, `constrain` lays activations out on `mesh` by `rules`."""
    token = _ACTIVE.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def activations_on(fn: Callable, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> Callable:
    """`fn` traced with `activation_mesh(mesh, rules)` active (wrap before `jax.jit`)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with activation_mesh(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """`x` constrained to the sharding its logical axis `names` map to on the active mesh
    (`spec_for`: a dimension the mesh axes do not divide stays replicated); `x` itself when
    no mesh is active (model code called outside a sharded step)."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(tuple(x.shape), names, mesh, rules)))


def check_model(model_config: Any, mesh: jax.sharding.Mesh) -> None:
    """Raises ValueError when tensor parallelism would split inside an attention head or leave
    the MLP unsharded: `model.num_heads` and `model.intermediate_size` (where the model has
    them) must be divisible by `mesh.tensor`."""
    tensor = int(mesh.shape["tensor"])
    if tensor == 1:
        return
    for key, what in (("num_heads", "whole attention heads"), ("intermediate_size", "the MLP's hidden units")):
        value = model_config.get(key) if hasattr(model_config, "get") else getattr(model_config, key, None)
        if value is not None and int(value) % tensor:
            raise ValueError(
                f"model.{key} = {value} is not divisible by mesh.tensor = {tensor}: tensor parallelism "
                f"shards {what} over the tensor axis; choose mesh.tensor dividing {value}")


# --------------------------------------------------------------------------- parameters

def _is_box(x: Any) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def tree_shardings(boxed_tree: Any, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> Any:
    """NamedShardings for a (possibly abstract) tree whose leaves may be logically boxed.

    The result has the structure of `nn.unbox(boxed_tree)`; unboxed leaves are replicated.
    """

    def one(x):
        if _is_box(x):
            value = x.unbox()
            return NamedSharding(mesh, spec_for(tuple(value.shape), tuple(x.names), mesh, rules))
        return NamedSharding(mesh, P(*([None] * len(getattr(x, "shape", ())))))

    return jax.tree.map(one, boxed_tree, is_leaf=_is_box)


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
    """Sharding of a batch array [batch, ...]: the batch axis over `data` x `fsdp`."""
    axes = tuple(a for a in (rules_dict(rules)["batch"] or ()) if mesh.shape[a] > 1)
    first = (axes if len(axes) > 1 else axes[0]) if axes else None
    return NamedSharding(mesh, P(first, *([None] * (ndim - 1))))


def batch_shardings(batch: dict, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> dict:
    return {k: batch_sharding(mesh, len(v.shape), rules) for k, v in batch.items()}


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: jax.sharding.Mesh, rules=DEFAULT_RULES) -> dict:
    """Host numpy batch (this process's share) -> global jax arrays laid out on the mesh."""
    out = {}
    for k, v in batch.items():
        sharding = batch_sharding(mesh, v.ndim, rules)
        if jax.process_count() == 1:
            out[k] = jax.device_put(v, sharding)
        else:
            out[k] = jax.make_array_from_process_local_data(sharding, v)
    return out
