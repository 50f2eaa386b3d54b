"""Reading PyTorch weights: `torch.load(weights_only=True)`, tensors -> numpy, weight-norm names."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_jax.convert.names import ConversionError

def _torch_load(path: str) -> Any:
    import pickle

    import torch

    # argparse.Namespace holds the hyper-parameters of older fairseq checkpoints; it is plain data.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConversionError(
            f"{path}: refused by torch.load(weights_only=True) (it holds Python objects beyond tensors and "
            f"plain containers; re-save its state dict and config as plain data): {str(e).splitlines()[0]}"
        ) from e


def _numpy_state(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):
            v = v.detach().float().cpu().numpy()
        out[k] = np.asarray(v)
    return out


def _canonical_weight_norm(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # torch's parametrized weight norm stores g and v as original0 and original1.
    out = {}
    for k, v in state.items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v")
        out[k] = v
    return out


def _split_heads(state: dict[str, np.ndarray], prefix: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Keeps the keys under `prefix` (stripped); other keys are task heads, returned by name."""
    if not any(k.startswith(prefix) for k in state):
        return state, []
    kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    heads = sorted(k for k in state if not k.startswith(prefix))
    return kept, heads
