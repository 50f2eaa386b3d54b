"""transformers folders (config.json + safetensors/bin): import, config mapping both ways, and export."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_jax.convert.names import (HF_MODEL_CLASSES, HF_PREFIXES, MODEL_TYPES, ConversionError, _require,
                                   params_to_state, state_to_params)
from ssl_jax.convert.weights import _canonical_weight_norm, _numpy_state, _split_heads, _torch_load
from ssl_jax.models.encoder import EncoderConfig

def encoder_config_from_hf(hf: Mapping[str, Any]) -> tuple[EncoderConfig, str]:
    """transformers config.json (dict) -> (EncoderConfig, model_type)."""
    model_type = hf.get("model_type")
    _require(
        model_type in MODEL_TYPES,
        f"unsupported architecture model_type={model_type!r}; supported: {list(MODEL_TYPES)}",
    )
    _require(hf.get("feat_extract_activation", "gelu") == "gelu", "only GELU feature-extractor activations are supported")
    _require(hf.get("hidden_act", "gelu") == "gelu", "only GELU feed-forward activations are supported")
    _require(abs(hf.get("layer_norm_eps", 1e-5) - 1e-5) < 1e-12, "only layer_norm_eps=1e-5 is supported")
    _require(not hf.get("add_adapter", False), "checkpoints with an adapter (add_adapter=True) are not supported")
    _require(not hf.get("conv_pos_batch_norm", False), "conv_pos_batch_norm=True is not supported")
    _require(hf.get("feat_proj_layer_norm", True), "feat_proj_layer_norm=False is not supported")
    _require(hf.get("position_embeddings_type") in (None,), "conformer position embeddings are not supported")
    d2v = model_type == "data2vec-audio"
    fields = dict(
        conv_dim=tuple(hf["conv_dim"]),
        conv_kernel=tuple(hf["conv_kernel"]),
        conv_stride=tuple(hf["conv_stride"]),
        conv_bias=bool(hf.get("conv_bias", False)),
        feat_extract_norm="layer" if d2v else hf.get("feat_extract_norm", "group"),
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        layer_norm_first=bool(hf.get("do_stable_layer_norm", False)) and not d2v,
        num_conv_pos_embeddings=hf["conv_pos_kernel_size"] if d2v else hf["num_conv_pos_embeddings"],
        num_conv_pos_embedding_groups=hf["num_conv_pos_embedding_groups"],
        num_pos_conv_layers=hf["num_conv_pos_embeddings"] if d2v else 1,
        relative_position_buckets=hf["num_buckets"] if model_type == "wavlm" else 0,
        relative_position_max_distance=hf.get("max_bucket_distance", 800),
        hidden_dropout=hf.get("hidden_dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1),
        activation_dropout=hf.get("activation_dropout", 0.0),
        feat_proj_dropout=hf.get("feat_proj_dropout", 0.0),
        layerdrop=hf.get("layerdrop", 0.1),
        feature_grad_scale=1.0,
    )
    for k in ("num_codevector_groups", "num_codevectors_per_group", "codevector_dim", "proj_codevector_dim"):
        if k in hf:
            fields[k] = hf[k]
    return EncoderConfig(**fields), model_type


def frame_lengths_of(hf_config: Any, sample_lengths: np.ndarray) -> np.ndarray:
    """Valid frames for a transformers config (object or dict) and sample counts."""
    from ssl_jax.models.feature_extractor import conv_output_lengths

    d = hf_config if isinstance(hf_config, Mapping) else hf_config.to_dict()
    return conv_output_lengths(np.asarray(sample_lengths), d["conv_kernel"], d["conv_stride"])


def infer_model_type(cfg: EncoderConfig) -> str:
    """The transformers architecture that expresses `cfg` (HuBERT and wav2vec 2.0 encoders are identical)."""
    if cfg.relative_position_buckets > 0:
        return "wavlm"
    if cfg.num_pos_conv_layers > 1:
        return "data2vec-audio"
    return "wav2vec2"


def hf_config_from_encoder(cfg: EncoderConfig, model_type: str) -> dict:
    """EncoderConfig -> keyword arguments of the transformers config class of `model_type`."""
    _require(model_type in MODEL_TYPES, f"unknown model_type {model_type!r}; choose from {list(MODEL_TYPES)}")
    d2v = model_type == "data2vec-audio"
    _require(cfg.frontend == "conv", f"the {cfg.frontend!r} front end has no transformers counterpart "
             "(transformers' speech encoders start with the conv waveform extractor)")
    _require(
        (cfg.relative_position_buckets > 0) == (model_type == "wavlm"),
        f"model_type={model_type} cannot express relative_position_buckets={cfg.relative_position_buckets}",
    )
    _require(
        (cfg.num_pos_conv_layers > 1) == d2v,
        f"model_type={model_type} cannot express num_pos_conv_layers={cfg.num_pos_conv_layers}",
    )
    if d2v:
        _require(cfg.feat_extract_norm == "layer", "data2vec-audio needs the layer-norm feature extractor")
        _require(not cfg.layer_norm_first, "data2vec-audio has no pre-LN (stable layer norm) variant")
    kw = dict(
        conv_dim=list(cfg.conv_dim),
        conv_kernel=list(cfg.conv_kernel),
        conv_stride=list(cfg.conv_stride),
        num_feat_extract_layers=len(cfg.conv_dim),
        conv_bias=cfg.conv_bias,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups,
        hidden_dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        feat_proj_dropout=cfg.feat_proj_dropout,
        layerdrop=cfg.layerdrop,
        hidden_act="gelu",
        feat_extract_activation="gelu",
        layer_norm_eps=1e-5,
    )
    if d2v:
        kw.update(num_conv_pos_embeddings=cfg.num_pos_conv_layers, conv_pos_kernel_size=cfg.num_conv_pos_embeddings)
    else:
        kw.update(
            num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
            feat_extract_norm=cfg.feat_extract_norm,
            do_stable_layer_norm=cfg.layer_norm_first,
        )
    if model_type == "wavlm":
        kw.update(num_buckets=cfg.relative_position_buckets, max_bucket_distance=cfg.relative_position_max_distance)
    if model_type in ("wav2vec2", "wavlm"):
        kw.update(
            num_codevector_groups=cfg.num_codevector_groups,
            num_codevectors_per_group=cfg.num_codevectors_per_group,
            codevector_dim=cfg.codevector_dim,
            proj_codevector_dim=cfg.proj_codevector_dim,
        )
    return kw


def load_hf(path: str) -> tuple[dict, EncoderConfig, dict]:
    """Reads a transformers folder (config.json + model.safetensors or pytorch_model.bin).

    Returns (SpeechEncoder params, EncoderConfig, info dict for the summary).
    """
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ConversionError(f"{path}: no config.json (expected a transformers model folder)")
    with open(cfg_path) as f:
        hf = json.load(f)
    cfg, model_type = encoder_config_from_hf(hf)
    st = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    bin_ = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(st):
        from safetensors.numpy import load_file

        state, weights = load_file(st), st
    elif os.path.isfile(index):
        from safetensors.numpy import load_file

        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state, weights = {}, index
        for shard in shards:
            state.update(load_file(os.path.join(path, shard)))
    elif os.path.isfile(bin_):
        state, weights = _numpy_state(_torch_load(bin_)), bin_
    else:
        raise ConversionError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    state, heads = _split_heads(_canonical_weight_norm(state), HF_PREFIXES[model_type])
    params, absent = state_to_params(state, cfg, weights)
    info = {"source": "hf", "model_type": model_type, "weights": weights, "dropped_heads": heads, "absent": absent}
    info.update(hf_normalize(path))
    return params, cfg, info


def hf_normalize(path: str) -> dict[str, Any]:
    """`{"normalize": bool, "normalize_from": str}` from a transformers folder's preprocessor_config.json.

    `do_normalize` of Wav2Vec2FeatureExtractor (True when the file omits it, transformers'
    default); False when the folder has no preprocessor_config.json.
    """
    pre = os.path.join(path, "preprocessor_config.json")
    if not os.path.isfile(pre):
        return {"normalize": False, "normalize_from": "assumed: the folder has no preprocessor_config.json"}
    with open(pre) as f:
        fe = json.load(f)
    if "do_normalize" not in fe:
        return {"normalize": True, "normalize_from": "preprocessor_config.json omits do_normalize (transformers' default)"}
    return {"normalize": bool(fe["do_normalize"]), "normalize_from": "preprocessor_config.json do_normalize"}



def export_hf(src: str, out: str, model_type: str | None = None) -> dict:
    """Writes the encoder of an ssl_jax checkpoint as a transformers folder.

    config.json + model.safetensors, and preprocessor_config.json (a Wav2Vec2FeatureExtractor whose
    `do_normalize` is the checkpoint's normalisation flag).
    """
    import torch
    import transformers

    from ssl_jax.training.checkpoint import load_pretrained
    from ssl_jax.upstream import checkpoint_normalize

    params, config = load_pretrained(src)
    cfg = EncoderConfig.from_config(config["model"])
    enc = params["encoder"] if "encoder" in params else params
    if model_type is None:
        model_type = (config.get("convert") or {}).get("model_type") or infer_model_type(cfg)
    kw = hf_config_from_encoder(cfg, model_type)
    config_cls, model_cls = (getattr(transformers, n) for n in HF_MODEL_CLASSES[model_type])
    hf_config = config_cls(**kw, architectures=[model_cls.__name__])
    model = model_cls(hf_config).eval()
    state = params_to_state(enc, cfg)
    target = model.state_dict()
    renamed = {}
    for k, v in state.items():
        if k not in target:
            alt = k.replace(".weight_g", ".parametrizations.weight.original0").replace(".weight_v", ".parametrizations.weight.original1")
            k = alt if alt in target else k
        renamed[k] = torch.from_numpy(np.array(v))
    if "masked_spec_embed" not in target:
        renamed.pop("masked_spec_embed", None)
    missing, unexpected = sorted(set(target) - set(renamed)), sorted(set(renamed) - set(target))
    if missing or unexpected:
        raise ConversionError(f"export to {model_cls.__name__}: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(renamed, strict=True)
    model.save_pretrained(out, safe_serialization=True)
    normalize = checkpoint_normalize(config)
    # Group-norm extractors are not padding-invariant in transformers, which is why its own
    # releases of them take no attention mask.
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=normalize,
        return_attention_mask=cfg.feat_extract_norm == "layer",
    ).save_pretrained(out)
    return {"model_type": model_type, "class": model_cls.__name__, "out": out, "config": cfg, "normalize": normalize}
