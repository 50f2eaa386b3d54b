"""`train.init_from`: start a run's parameters from another checkpoint (fresh optimizer state).

The encoder must match the checkpoint's exactly (names and shapes); the objective's heads are
taken where a parameter of the same name and shape exists there and are left freshly
initialised otherwise. Any ssl_jax checkpoint works: a training workdir, a step folder, or a
checkpoint written by `python -m ssl_jax.convert` from transformers, fairseq or torchaudio.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
from flax import traverse_util

log = logging.getLogger(__name__)

_SHOWN = 12  # differences listed in an error


class WarmStartError(ValueError):
    """The checkpoint's encoder does not fit the configured model."""


@dataclasses.dataclass
class WarmStart:
    """The merged parameters and what came from where (paths joined with '/')."""

    params: dict
    loaded: list[str]
    fresh: list[str]


def _flat(tree: Any) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def merge(fresh: Any, checkpoint: Any, source: str = "checkpoint") -> WarmStart:
    """`fresh` parameters with the encoder, and every head parameter of equal name and shape,
    replaced by `checkpoint`'s.

    Args:
        fresh: the run's initial parameters `{"encoder": ..., <heads>}` (arrays or shape structs).
        checkpoint: parameters loaded from `source` (host arrays).
    Raises:
        WarmStartError: the checkpoint has no encoder, or its encoder's parameter names or shapes
            differ from the model's (the differing parameters are named).
    """
    if "encoder" not in checkpoint:
        raise WarmStartError(f"{source} holds no encoder parameters (top-level keys: {sorted(checkpoint)})")
    want, have = _flat(fresh), _flat(checkpoint)
    enc = [k for k in want if k.startswith("encoder/")]
    problems = [f"{k}: missing from the checkpoint" for k in enc if k not in have]
    problems += [f"{k}: in the checkpoint, not in the model" for k in have if k.startswith("encoder/") and k not in want]
    problems += [
        f"{k}: checkpoint {list(np.shape(have[k]))} vs model {list(want[k].shape)}"
        for k in enc
        if k in have and tuple(np.shape(have[k])) != tuple(want[k].shape)
    ]
    if problems:
        more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise WarmStartError(
            f"the encoder in {source} does not match the configured model ({len(problems)} differences):\n  "
            + "\n  ".join(problems[:_SHOWN])
            + more
        )
    merged, loaded, kept = {}, [], []
    for k, v in want.items():
        if k in have and tuple(np.shape(have[k])) == tuple(v.shape):
            merged[k] = np.asarray(have[k], dtype=v.dtype)
            loaded.append(k)
        else:
            merged[k] = v
            kept.append(k)
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in merged.items()})
    return WarmStart(params=params, loaded=loaded, fresh=kept)


def load(path: str, fresh: Any) -> WarmStart:
    """`merge(fresh, <parameters of the checkpoint at path>)`, logging what was taken."""
    from ssl_jax.training.checkpoint import load_pretrained, resolve_step_dir

    step_dir = resolve_step_dir(path)
    params, _ = load_pretrained(step_dir)
    out = merge(fresh, params, source=step_dir)
    heads = sorted({k.split("/")[0] for k in out.loaded if not k.startswith("encoder/")})
    log.info(
        "warm start from %s: %d parameter arrays loaded (encoder%s), %d freshly initialised%s",
        step_dir,
        len(out.loaded),
        "".join(f", {h}" for h in heads),
        len(out.fresh),
        f" ({', '.join(sorted({k.split('/')[0] for k in out.fresh}))})" if out.fresh else "",
    )
    return out
