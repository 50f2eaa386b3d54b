"""torchaudio state dicts (`wav2vec2_model` / `hubert_model` / `wavlm_model` builders' names)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_jax.convert.fairseq import DEFAULT_CONV_LAYERS, _parse_conv_layers
from ssl_jax.convert.names import _require, state_to_params
from ssl_jax.convert.weights import _canonical_weight_norm, _numpy_state, _torch_load
from ssl_jax.models.encoder import EncoderConfig

_TORCHAUDIO_HEADS = re.compile(r"^(aux\.|logit_generator\.|final_proj\.)")


def torchaudio_state_to_canonical(state: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Renames torchaudio `Wav2Vec2Model` / `wavlm_model` / pretraining-model keys to transformers names."""
    out, heads = {}, []
    for key, value in state.items():
        k = re.sub(r"^wav2vec2\.", "", key)
        if _TORCHAUDIO_HEADS.match(k):
            heads.append(key)
            continue
        if k == "mask_generator.mask_embedding":
            out["masked_spec_embed"] = value
            continue
        k = re.sub(r"^encoder\.feature_projection\.", "feature_projection.", k)
        k = re.sub(r"^encoder\.transformer\.", "encoder.", k)
        m = re.match(r"^(encoder\.layers\.\d+\.attention)\.attention\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$", k)
        if m:
            base, what = m.groups()
            if what.startswith("out_proj"):
                out[f"{base}.{what}"] = value
            else:
                kind = "weight" if what == "in_proj_weight" else "bias"
                for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(np.asarray(value), 3, axis=0)):
                    out[f"{base}.{name}.{kind}"] = part
            continue
        out[k] = value
    return out, sorted(heads)


def encoder_config_from_torchaudio(state: Mapping[str, np.ndarray], factory: Mapping[str, Any] | None) -> tuple[EncoderConfig, list[str]]:
    """EncoderConfig from torchaudio factory arguments (`wav2vec2_model(**factory)` names); what
    is not given is read from the weight shapes, or assumed (listed in the returned notes)."""
    factory = dict(factory or {})
    notes = []
    n_conv = 0
    while f"feature_extractor.conv_layers.{n_conv}.conv.weight" in state:
        n_conv += 1
    _require(n_conv > 0, "no feature_extractor.conv_layers.*.conv.weight keys: not a torchaudio wav2vec2-family state dict")
    if "extractor_conv_layer_config" in factory:
        conv = [tuple(c) for c in factory["extractor_conv_layer_config"]]
    else:
        shapes = [state[f"feature_extractor.conv_layers.{i}.conv.weight"].shape for i in range(n_conv)]
        default = _parse_conv_layers(DEFAULT_CONV_LAYERS)
        kernels = [s[2] for s in shapes]
        _require(
            kernels == [c[1] for c in default],
            f"conv kernels {kernels} are not the standard ones; pass extractor_conv_layer_config in --torchaudio_config",
        )
        conv = [(s[0], c[1], c[2]) for s, c in zip(shapes, default)]
        notes.append("conv strides assumed standard (5,2,2,2,2,2,2)")
    has_ln1 = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    mode = factory.get("extractor_mode", "layer_norm" if has_ln1 else "group_norm")
    hidden = state["encoder.feature_projection.projection.weight"].shape[0]
    n_layers = 0
    while f"encoder.transformer.layers.{n_layers}.final_layer_norm.weight" in state:
        n_layers += 1
    buckets_key = "encoder.transformer.layers.0.attention.rel_attn_embed.weight"
    heads_default = state[buckets_key].shape[1] if buckets_key in state else max(1, hidden // 64)
    if "encoder_num_heads" not in factory and buckets_key not in state:
        notes.append(f"encoder_num_heads assumed {heads_default} (64 per head)")
    v = state.get("encoder.transformer.pos_conv_embed.conv.weight_v")
    if v is None:
        v = state.get("encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1")
    _require(v is not None, "no positional convolution weights (encoder.transformer.pos_conv_embed.conv.weight_v)")
    if "encoder_layer_norm_first" not in factory:
        notes.append(f"encoder_layer_norm_first assumed {mode == 'layer_norm'} (pre-LN iff layer-norm extractor)")
    fields = dict(
        conv_dim=tuple(c[0] for c in conv),
        conv_kernel=tuple(c[1] for c in conv),
        conv_stride=tuple(c[2] for c in conv),
        conv_bias=bool(factory.get("extractor_conv_bias", "feature_extractor.conv_layers.0.conv.bias" in state)),
        feat_extract_norm="group" if mode == "group_norm" else "layer",
        hidden_size=int(factory.get("encoder_embed_dim", hidden)),
        num_layers=int(factory.get("encoder_num_layers", n_layers)),
        num_heads=int(factory.get("encoder_num_heads", heads_default)),
        intermediate_size=int(factory.get("encoder_ff_interm_features", state["encoder.transformer.layers.0.feed_forward.intermediate_dense.weight"].shape[0])),
        layer_norm_first=bool(factory.get("encoder_layer_norm_first", mode == "layer_norm")),
        num_conv_pos_embeddings=int(factory.get("encoder_pos_conv_kernel", v.shape[2])),
        num_conv_pos_embedding_groups=int(factory.get("encoder_pos_conv_groups", hidden // v.shape[1])),
        num_pos_conv_layers=1,
        relative_position_buckets=int(factory.get("encoder_num_buckets", state[buckets_key].shape[0] if buckets_key in state else 0)),
        relative_position_max_distance=int(factory.get("encoder_max_distance", 800)),
        hidden_dropout=float(factory.get("encoder_dropout", 0.1)),
        attention_dropout=float(factory.get("encoder_attention_dropout", 0.1)),
        activation_dropout=float(factory.get("encoder_ff_interm_dropout", 0.0)),
        feat_proj_dropout=float(factory.get("encoder_projection_dropout", 0.1)),
        layerdrop=float(factory.get("encoder_layer_drop", 0.1)),
        feature_grad_scale=1.0,
    )
    if fields["relative_position_buckets"] and "encoder_max_distance" not in factory:
        notes.append("encoder_max_distance assumed 800")
    return EncoderConfig(**fields), notes


def load_torchaudio(path: str, factory: Mapping[str, Any] | None = None) -> tuple[dict, EncoderConfig, dict]:
    """Reads a torchaudio state dict (`.pt`/`.pth` via torch.load(weights_only=True), or `.safetensors`)."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        raw = load_file(path)
    else:
        raw = _torch_load(path)
        if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
            raw = raw["state_dict"]
        raw = _numpy_state(raw)
    raw = {re.sub(r"^wav2vec2\.", "", k): v for k, v in raw.items()}
    cfg, notes = encoder_config_from_torchaudio(raw, factory)
    state, heads = torchaudio_state_to_canonical(_canonical_weight_norm(raw))
    params, absent = state_to_params(state, cfg, path)
    model_type = "wavlm" if cfg.relative_position_buckets else "wav2vec2"
    return params, cfg, {"source": "torchaudio", "model_type": model_type, "weights": path, "dropped_heads": heads, "absent": absent,
                         "assumed": notes, "normalize": False,
                         "normalize_from": "assumed: torchaudio state dicts do not record it (large LV-60k bundles normalise)"}
