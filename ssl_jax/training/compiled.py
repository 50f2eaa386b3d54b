"""Jitted steps compiled ahead of time, one program per batch shape, through XLA's persistent cache.

The trainer compiles every bucket shape of its train and eval steps before the first step
(lowering one by one, compiling in parallel threads), so no step stalls mid-run for a compile,
and logs each program's FLOPs (XLA's cost analysis) and memory (its memory analysis). With the
persistent compilation cache a resumed or repeated run reads the programs back instead of
compiling them; `CompiledSteps.cache_hits` says how many it found.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from typing import Any, Callable, Sequence

import jax

log = logging.getLogger(__name__)

_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"  # recorded when a compiled program is written


class _CacheEvents:
    """Process-wide counts of JAX's persistent-cache hits and writes (JAX's monitoring events)."""

    def __init__(self):
        self.counts = {_HIT: 0, _MISS: 0}
        jax.monitoring.register_event_listener(self._on_event)

    def _on_event(self, event: str, **kwargs) -> None:  # noqa: ARG002
        if event in self.counts:
            self.counts[event] += 1


_events: _CacheEvents | None = None
MAX_CACHE_BYTES = 4 * 2**30


def use_persistent_cache(setting: str) -> str | None:
    """Points JAX's persistent compilation cache at `setting` and returns the folder.

    Args:
        setting: `train.compilation_cache`: "" = `$SSL_JAX_CACHE/xla` (the user cache, shared by
            runs), "off" = no persistent cache, anything else = that folder.
    Returns:
        The cache folder, or None when off. Every program is cached, however fast it compiled.
    """
    global _events
    from jax.experimental.compilation_cache import compilation_cache

    if _events is None:
        _events = _CacheEvents()
    if setting == "off":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if not setting:
        from ssl_jax.data.synth import cache_dir

        setting = os.path.join(cache_dir(), "xla")
    path = os.path.abspath(setting)
    os.makedirs(path, exist_ok=True)
    if not jax.config.jax_enable_compilation_cache or jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", path)
        compilation_cache.reset_cache()  # the cache object binds its folder on first use
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if jax.config.jax_compilation_cache_max_size < 0:
        jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)  # least recently used go first
    return path


def program_facts(compiled: Any) -> dict:
    """FLOPs (XLA's cost analysis) and bytes (its memory analysis: arguments, outputs, scratch)
    of a compiled program."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    mem = compiled.memory_analysis()
    out = {"flops": float((cost or {}).get("flops", float("nan")))}
    for name in ("argument", "output", "temp"):
        out[f"{name}_bytes"] = int(getattr(mem, f"{name}_size_in_bytes", -1)) if mem is not None else -1
    return out


def shape_key(batch: dict) -> tuple:
    """The program a batch needs: its keys and shapes."""
    return tuple((k, tuple(v.shape)) for k, v in sorted(batch.items()))


class CompiledSteps:
    """A jitted step with one compiled program per batch shape.

    `precompile` builds the programs for the shapes a run will see; a call with any other shape
    compiles on the spot, which is counted (`late`) and warned about.
    """

    def __init__(self, fn: Callable, in_shardings: Callable, out_shardings: Any, donate: tuple[int, ...] = ()):
        self._fn, self._in, self._out, self._donate = fn, in_shardings, out_shardings, donate
        self._compiled: dict[tuple, Any] = {}
        self.facts: dict[tuple, dict] = {}
        self.compile_seconds = 0.0
        self.late = 0
        self.cache_hits = 0
        self.cache_writes = 0

    @property
    def name(self) -> str:
        return getattr(self._fn, "__name__", "step")

    @property
    def count(self) -> int:
        return len(self._compiled)

    @property
    def flops(self) -> dict[tuple, float]:
        return {k: v["flops"] for k, v in self.facts.items()}

    def _lower(self, args: Sequence[Any]) -> Any:
        jitted = jax.jit(self._fn, in_shardings=self._in(args[1]), out_shardings=self._out, donate_argnums=self._donate)
        return jitted.lower(*args)

    def _record(self, key: tuple, compiled: Any, seconds: float) -> None:
        self._compiled[key] = compiled
        self.facts[key] = facts = program_facts(compiled)
        log.info(
            "%s for %s: %.3g FLOP; arguments %.1f MiB, outputs %.1f MiB, scratch %.1f MiB; %.1f s",
            self.name, dict(key), facts["flops"], facts["argument_bytes"] / 2**20, facts["output_bytes"] / 2**20,
            facts["temp_bytes"] / 2**20, seconds,
        )

    def precompile(self, arg_sets: Sequence[Sequence[Any]]) -> None:
        """Compiles the programs for these argument sets (arrays or `jax.ShapeDtypeStruct`s with
        shardings; the batch is the second argument). Lowering (Python tracing) runs one by one;
        XLA's compiles run in parallel threads."""
        todo = {}
        for args in arg_sets:
            key = shape_key(args[1])
            if key not in self._compiled and key not in todo:
                todo[key] = self._lower(args)
        if not todo:
            return
        counts = dict(_events.counts) if _events is not None else None
        t = time.time()
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futures = {key: pool.submit(lowered.compile) for key, lowered in todo.items()}
            for key, future in futures.items():
                self._record(key, future.result(), time.time() - t)
        seconds = time.time() - t
        self.compile_seconds += seconds
        if counts is not None:
            self.cache_hits += _events.counts[_HIT] - counts[_HIT]
            self.cache_writes += _events.counts[_MISS] - counts[_MISS]

    def __call__(self, *args):
        key = shape_key(args[1])
        if key not in self._compiled:
            t = time.time()
            compiled = self._lower(args).compile()
            self.compile_seconds += time.time() - t
            self.late += 1
            log.warning("%s: compiled mid-run for a batch shape not compiled at start-up: %s", self.name, dict(key))
            self._record(key, compiled, time.time() - t)
        return self._compiled[key](*args)
