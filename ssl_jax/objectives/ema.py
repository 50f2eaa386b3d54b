"""The teacher-student machinery of the EMA self-distillation family (data2vec, data2vec 2.0,
BYOL-A, M2D, ATST).

* `EmaSchedule`: the teacher's decay, annealed from `start` to `end` over `steps` updates and
  constant after (linear as data2vec, Baevski et al., 2022, Sec. 3.3; or cosine as BYOL and
  ATST), set by `objective.ema.{start,end,steps,shape}`.
* `EmaObjective`: an `Objective` whose non-gradient state holds `teacher`, a copy of the
  parameter subtrees named by `teacher_keys`; it starts equal to the student (a fresh run or a
  warm start, `start_state`), gets no gradient, and follows `decay * teacher + (1 - decay) *
  student` inside the jitted step after every optimizer update (`update_state`). The state
  sits in the train state, so the mesh rules shard it like the parameters and Orbax
  checkpoints it with them.
* `layer_targets`: data2vec's regression targets, the average of the top K layers, each
  normalised per utterance over time (instance norm) or per frame (layer norm).
* `spread`: the collapse monitors, the standard deviation of targets or predictions across the
  frames of a batch (and its parts within utterances over time, and across utterances); an
  objective's `floors` name the minimum of each, under which the trainer warns.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax.objectives import Objective

_SHAPES = ("linear", "cosine")


@dataclasses.dataclass(frozen=True)
class EmaSchedule:
    """Teacher decay per update: `start` at step 0 to `end` at `steps`, then `end`."""

    start: float
    end: float
    steps: int
    shape: str = "linear"

    def __post_init__(self):
        if not 0.0 <= self.start <= 1.0 or not 0.0 <= self.end <= 1.0:
            raise ValueError(f"objective.ema.start and .end must lie in [0, 1], got {self.start}, {self.end}")
        if self.steps < 0:
            raise ValueError(f"objective.ema.steps must be >= 0, got {self.steps}")
        if self.shape not in _SHAPES:
            raise ValueError(f"objective.ema.shape must be one of {_SHAPES}, got {self.shape!r}")

    @classmethod
    def from_config(cls, cfg: Any) -> "EmaSchedule":
        return cls(float(cfg["start"]), float(cfg["end"]), int(cfg["steps"]), str(cfg.get("shape", "linear")))

    def __call__(self, step: Any) -> jax.Array:
        """The decay (float32 scalar) used for the update after step `step`."""
        if self.steps == 0:
            return jnp.asarray(self.end, jnp.float32)
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / self.steps, 0.0, 1.0)
        if self.shape == "cosine":
            frac = 0.5 * (1.0 - jnp.cos(math.pi * frac))
        return (self.start + (self.end - self.start) * frac).astype(jnp.float32)


def ema_update(teacher: Any, student: Any, decay: jax.Array) -> Any:
    """`decay * teacher + (1 - decay) * student`, leaf by leaf, with the student held constant."""
    student = jax.lax.stop_gradient(student)
    return jax.tree.map(lambda t, s: (decay * t + (1.0 - decay) * s).astype(t.dtype), teacher, student)


def instance_norm(x: jax.Array, frame_mask: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Standardises every channel of every utterance over its valid frames.

    x: [batch, frames, dim]; frame_mask: bool[batch, frames] -> [batch, frames, dim] (0 on padding).
    """
    x = x.astype(jnp.float32)
    m = frame_mask[..., None].astype(jnp.float32)
    n = jnp.maximum(m.sum(1, keepdims=True), 1.0)
    mean = (x * m).sum(1, keepdims=True) / n
    var = (jnp.square(x - mean) * m).sum(1, keepdims=True) / n
    return (x - mean) * jax.lax.rsqrt(var + eps) * m


def layer_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Standardises every frame over its channels (no learned scale): [..., dim] -> [..., dim]."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(jnp.square(x - mean).mean(-1, keepdims=True) + eps)


def normalize(x: jax.Array, frame_mask: jax.Array, how: str) -> jax.Array:
    """`how` = "instance" (`instance_norm`), "layer" (`layer_norm`) or "none"; [batch, frames, dim]."""
    if how == "instance":
        return instance_norm(x, frame_mask)
    if how == "layer":
        return layer_norm(x) * frame_mask[..., None]
    if how == "none":
        return x.astype(jnp.float32) * frame_mask[..., None]
    raise ValueError(f"target normalisation must be 'instance', 'layer' or 'none', got {how!r}")


def layer_targets(
    layers: tuple[jax.Array, ...] | list[jax.Array],
    frame_mask: jax.Array,
    top_k: int,
    layer_norm_each: str = "instance",
    final_norm: str = "none",
) -> jax.Array:
    """data2vec's targets: the mean of the last `top_k` layer outputs, each normalised by
    `layer_norm_each`, then the mean normalised by `final_norm`.

    layers: the teacher's blocks' outputs, first to last, each [batch, frames, dim] (block
    outputs, `hidden_states[1:]`, or data2vec's feed-forward outputs); frame_mask:
    bool[batch, frames].
    Returns: float32 [batch, frames, dim], held constant (no gradient).
    """
    layers = list(layers)
    if not 1 <= top_k <= len(layers):
        raise ValueError(f"objective.top_k must be in [1, {len(layers)}] (the teacher's layers), got {top_k}")
    y = sum(normalize(h, frame_mask, layer_norm_each) for h in layers[-top_k:]) / top_k
    return jax.lax.stop_gradient(normalize(y, frame_mask, final_norm))


def spread(x: jax.Array, mask: jax.Array | None = None, prefix: str = "target") -> dict[str, jax.Array]:
    """Collapse monitors of `x`: standard deviations, averaged over channels.

    x: [batch, frames, dim] with mask bool[batch, frames] -> `<prefix>_std` (across every valid
    frame of the batch), `<prefix>_std_time` (within each utterance, over time) and
    `<prefix>_std_batch` (of the utterance means, across the batch);
    x: [batch, dim] (clip level, mask None) -> `<prefix>_std` across the batch.
    """
    x = jax.lax.stop_gradient(x).astype(jnp.float32)
    if x.ndim == 2:
        return {f"{prefix}_std": jnp.sqrt(x.var(0) + 1e-6).mean()}
    m = (jnp.ones(x.shape[:2], bool) if mask is None else mask)[..., None].astype(jnp.float32)
    n = jnp.maximum(m.sum(), 1.0)
    mean = (x * m).sum((0, 1)) / n
    std_all = jnp.sqrt((jnp.square(x - mean) * m).sum((0, 1)) / n + 1e-6).mean()
    n_u = jnp.maximum(m.sum(1), 1.0)  # [batch, 1]
    mean_u = (x * m).sum(1) / n_u  # [batch, dim]
    std_time = jnp.sqrt((jnp.square(x - mean_u[:, None]) * m).sum(1) / n_u + 1e-6).mean(-1)  # [batch]
    has = (m.sum((1, 2)) > 0).astype(jnp.float32)
    std_time = (std_time * has).sum() / jnp.maximum(has.sum(), 1.0)
    batch_mean = (mean_u * has[:, None]).sum(0) / jnp.maximum(has.sum(), 1.0)
    std_batch = jnp.sqrt((jnp.square(mean_u - batch_mean) * has[:, None]).sum(0) / jnp.maximum(has.sum(), 1.0) + 1e-6).mean()
    return {f"{prefix}_std": std_all, f"{prefix}_std_time": std_time, f"{prefix}_std_batch": std_batch}


def floors_from_config(o: Any) -> dict[str, float]:
    """`objective.collapse.{target_std,pred_std}` as the objective's `floors`."""
    c = o.get("collapse") if hasattr(o, "get") else None
    if not c:
        return {}
    return {str(k): float(v) for k, v in (c.to_dict() if hasattr(c, "to_dict") else dict(c)).items()}


class EmaObjective(Objective):
    """Base of the EMA objectives. A subclass sets `teacher_keys` (the top-level parameter
    subtrees the teacher copies, e.g. `("encoder",)`) and builds `self.ema` (an `EmaSchedule`),
    and reads the teacher as `state["teacher"]` in its loss.

    State: `{"teacher": {key: subtree for key in teacher_keys}}` plus what a subclass adds in
    `extra_state`.
    """

    teacher_keys: tuple[str, ...] = ("encoder",)
    ema: EmaSchedule

    def __init__(self, config: Any):
        self.config = config
        o = config["objective"]
        self.ema = EmaSchedule.from_config(o["ema"])
        self.floors = floors_from_config(o)

    def extra_state(self, rng: jax.Array, batch: dict) -> dict:
        """Non-gradient state beside the teacher (boxed like parameters); `{}` by default."""
        del rng, batch
        return {}

    def init_state(self, rng: jax.Array, batch: dict) -> Any:
        """The teacher's boxes (a fresh initialisation; `start_state` copies the student in)."""
        params = self.init(rng, batch)
        missing = [k for k in self.teacher_keys if k not in params]
        if missing:
            raise KeyError(f"teacher keys {missing} are not among the parameters {sorted(params)}")
        return {"teacher": {k: params[k] for k in self.teacher_keys}, **self.extra_state(rng, batch)}

    def start_state(self, state: Any, params: Any) -> Any:
        """The teacher equal to the student's `params` (a fresh run or a warm start)."""
        return {**state, "teacher": {k: jax.tree.map(jnp.copy, params[k]) for k in self.teacher_keys}}

    def update_state(self, state: Any, params: Any, step: Any, inputs: Any = None) -> Any:
        del inputs
        teacher = {k: ema_update(state["teacher"][k], params[k], self.ema(step)) for k in self.teacher_keys}
        return {**state, "teacher": teacher}
