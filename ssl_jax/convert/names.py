"""Canonical (transformers) key names <-> `SpeechEncoder` parameters, and the key and shape checks
every source goes through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_jax.models.encoder import EncoderConfig

MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
HF_PREFIXES = {"wav2vec2": "wav2vec2.", "hubert": "hubert.", "wavlm": "wavlm.", "data2vec-audio": "data2vec_audio."}
HF_MODEL_CLASSES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
}
# Keys an encoder may lack in some releases; they are filled with zeros and reported.
OPTIONAL_KEYS = ("masked_spec_embed",)


class ConversionError(ValueError):
    """A checkpoint that cannot be converted: wrong architecture, missing or unexpected keys."""


# ---------------------------------------------------------------------------------------------
# Canonical (transformers) names <-> SpeechEncoder parameters


def _param_map(cfg: EncoderConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """(canonical key, SpeechEncoder param path, transform) for every encoder weight.

    Transforms: "id" (copy), "linear" ([out, in] <-> [in, out]), "conv" ([out, in, k] <-> [k, in, out]),
    "g" (weight-norm magnitude [1, 1, k] <-> [k]), "const" (WavLM gate constant [1, h, 1, 1] <-> [h]).
    """
    m: list[tuple[str, tuple[str, ...], str]] = []

    def norm(key, path):
        m.append((f"{key}.weight", (*path, "scale"), "id"))
        m.append((f"{key}.bias", (*path, "bias"), "id"))

    def dense(key, path):
        m.append((f"{key}.weight", (*path, "kernel"), "linear"))
        m.append((f"{key}.bias", (*path, "bias"), "id"))

    for i in range(len(cfg.conv_dim)):
        fe = ("feature_extractor", f"conv_{i}")
        m.append((f"feature_extractor.conv_layers.{i}.conv.weight", (*fe, "kernel"), "conv"))
        if cfg.conv_bias:
            m.append((f"feature_extractor.conv_layers.{i}.conv.bias", (*fe, "bias"), "id"))
        if cfg.feat_extract_norm == "layer" or i == 0:
            norm(f"feature_extractor.conv_layers.{i}.layer_norm", ("feature_extractor", f"norm_{i}"))
    norm("feature_projection.layer_norm", ("feature_layer_norm",))
    dense("feature_projection.projection", ("feature_projection",))
    m.append(("masked_spec_embed", ("mask_embedding",), "id"))
    if cfg.num_pos_conv_layers == 1:
        m.append(("encoder.pos_conv_embed.conv.weight_g", ("encoder", "pos_conv", "weight_g"), "g"))
        m.append(("encoder.pos_conv_embed.conv.weight_v", ("encoder", "pos_conv", "weight_v"), "conv"))
        m.append(("encoder.pos_conv_embed.conv.bias", ("encoder", "pos_conv", "bias"), "id"))
    else:
        for j in range(cfg.num_pos_conv_layers):
            path = ("encoder", "pos_conv", f"conv_{j}")
            m.append((f"encoder.pos_conv_embed.layers.{j}.conv.weight", (*path, "kernel"), "conv"))
            m.append((f"encoder.pos_conv_embed.layers.{j}.conv.bias", (*path, "bias"), "id"))
    norm("encoder.layer_norm", ("encoder", "layer_norm"))
    if cfg.relative_position_buckets > 0:
        m.append(("encoder.layers.0.attention.rel_attn_embed.weight", ("encoder", "rel_pos_bias", "rel_attn_embed"), "id"))
    for i in range(cfg.num_layers):
        k, p = f"encoder.layers.{i}", ("encoder", f"layers_{i}")
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            dense(f"{k}.attention.{proj}", (*p, "attention", proj))
        if cfg.relative_position_buckets > 0:
            dense(f"{k}.attention.gru_rel_pos_linear", (*p, "attention", "gate", "gru_rel_pos_linear"))
            m.append((f"{k}.attention.gru_rel_pos_const", (*p, "attention", "gate", "gru_rel_pos_const"), "const"))
        norm(f"{k}.layer_norm", (*p, "layer_norm"))
        dense(f"{k}.feed_forward.intermediate_dense", (*p, "feed_forward", "intermediate_dense"))
        dense(f"{k}.feed_forward.output_dense", (*p, "feed_forward", "output_dense"))
        norm(f"{k}.final_layer_norm", (*p, "final_layer_norm"))
    return m


def _to_jax(x: np.ndarray, how: str) -> np.ndarray:
    if how == "linear":
        return x.T
    if how == "conv":
        return x.transpose(2, 1, 0)
    if how in ("g", "const"):
        return x.reshape(-1)
    return x


def _to_torch(x: np.ndarray, how: str) -> np.ndarray:
    if how == "linear":
        return x.T
    if how == "conv":
        return x.transpose(2, 1, 0)
    if how == "g":
        return x.reshape(1, 1, -1)
    if how == "const":
        return x.reshape(1, -1, 1, 1)
    return x


def canonical_keys(cfg: EncoderConfig) -> list[str]:
    """The transformers key names the encoder of `cfg` needs."""
    return [k for k, _, _ in _param_map(cfg)]


def check_keys(state: Mapping[str, Any], cfg: EncoderConfig, source: str) -> list[str]:
    """Raises ConversionError listing missing and unexpected keys; returns the optional keys absent."""
    expected = canonical_keys(cfg)
    missing = [k for k in expected if k not in state and k not in OPTIONAL_KEYS]
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"{source}: the weights do not fit the configured encoder.\n"
            f"  missing keys ({len(missing)}): {missing}\n  unexpected keys ({len(unexpected)}): {unexpected}"
        )
    return [k for k in OPTIONAL_KEYS if k not in state]


def state_to_params(state: Mapping[str, np.ndarray], cfg: EncoderConfig, source: str = "checkpoint") -> tuple[dict, list[str]]:
    """Canonical state dict -> SpeechEncoder params (nested dict of float32 numpy arrays).

    Returns the params and the optional keys that were absent (filled with zeros).
    """
    absent = check_keys(state, cfg, source)
    params: dict = {}
    for key, path, how in _param_map(cfg):
        if key in state:
            value = _to_jax(np.asarray(state[key], dtype=np.float32), how)
        else:
            value = np.zeros((cfg.hidden_size,), np.float32)
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    _check_shapes(params, cfg, source)
    return params, absent


def _check_shapes(params: dict, cfg: EncoderConfig, source: str) -> None:
    import jax

    from ssl_jax.models.encoder import SpeechEncoder

    wav = np.zeros((1, 400 * 4), np.float32)
    abstract = jax.eval_shape(
        lambda: SpeechEncoder(cfg).init(jax.random.key(0), wav, np.ones_like(wav, bool))
    )["params"]
    from flax.core import meta

    want = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_flatten_with_path(meta.unbox(abstract))[0]}
    got = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    if set(want) != set(got):
        raise ConversionError(f"{source}: parameter tree mismatch: {sorted(set(want) ^ set(got))}")
    bad = [f"{k}: got {got[k]}, need {want[k]}" for k in want if tuple(got[k]) != tuple(want[k])]
    if bad:
        raise ConversionError(f"{source}: weights have the wrong shapes for the config:\n  " + "\n  ".join(bad))


def params_to_state(params: Mapping, cfg: EncoderConfig) -> dict[str, np.ndarray]:
    """SpeechEncoder params -> canonical (transformers) state dict of numpy arrays."""
    from flax.core import meta

    _require(cfg.frontend == "conv", f"the {cfg.frontend!r} front end has no transformers counterpart")
    params = meta.unbox(params)
    out = {}
    for key, path, how in _param_map(cfg):
        node = params
        for name in path:
            node = node[name]
        out[key] = np.ascontiguousarray(_to_torch(np.asarray(node, dtype=np.float32), how))
    return out



def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConversionError(msg)
