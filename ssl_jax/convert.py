"""Import and export of released PyTorch speech-encoder checkpoints.

  python -m ssl_jax.convert --from=hf --src=HF_FOLDER --out=DIR
  python -m ssl_jax.convert --from=fairseq --src=model.pt --out=DIR
  python -m ssl_jax.convert --from=torchaudio --src=state_dict.pt --out=DIR [--torchaudio_config=cfg.json]
  python -m ssl_jax.convert --to=hf --src=CHECKPOINT_DIR --out=HF_FOLDER [--model_type=wavlm]

Covers wav2vec 2.0, HuBERT, WavLM and data2vec-audio encoders (transformers' `Wav2Vec2Model`,
`HubertModel`, `WavLMModel`, `Data2VecAudioModel`). Every source is first renamed to transformers'
key names (the "canonical" names below), checked against the keys the architecture needs
(missing or unexpected keys are an error that lists them), then mapped to `SpeechEncoder`
parameters. Weights are read from safetensors when possible; `.bin`/`.pt` files only through
`torch.load(weights_only=True)`. torch and transformers are imported lazily, only here.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
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


# ---------------------------------------------------------------------------------------------
# transformers configs


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConversionError(msg)


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


# ---------------------------------------------------------------------------------------------
# Reading weights


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


# fairseq ------------------------------------------------------------------------------------

_FAIRSEQ_HEADS = re.compile(r"^(quantizer\.|project_q\.|final_proj\.|label_embs_concat|_ema|target_glu\.|proj\.|ema\.|decoder\.|encoder\.ema)")
_FAIRSEQ_RULES = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?(weight|bias)$", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"^layer_norm\.(weight|bias)$", r"feature_projection.layer_norm.\1"),
    (r"^post_extract_proj\.(weight|bias)$", r"feature_projection.projection.\1"),
    (r"^mask_emb$", "masked_spec_embed"),
    (r"^encoder\.pos_conv\.0\.(weight_g|weight_v|bias)$", r"encoder.pos_conv_embed.conv.\1"),
    (r"^encoder\.pos_conv\.(\d+)\.0\.(weight|bias)$", r"encoder.pos_conv_embed.layers.\1.conv.\2"),
    (r"^encoder\.layer_norm\.(weight|bias)$", r"encoder.layer_norm.\1"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)$", r"encoder.layers.\1.attention.\2.\3"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight$", r"encoder.layers.\1.attention.rel_attn_embed.weight"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)$", r"encoder.layers.\1.attention.gru_rel_pos_linear.\2"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$", r"encoder.layers.\1.layer_norm.\2"),
    (r"^encoder\.layers\.(\d+)\.fc1\.(weight|bias)$", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.fc2\.(weight|bias)$", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"encoder.layers.\1.final_layer_norm.\2"),
]


def fairseq_state_to_canonical(state: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Renames fairseq keys to transformers names. Returns (renamed state, dropped head keys).

    Keys that are neither encoder weights nor known pretraining/fine-tuning heads stay under their
    fairseq names, so the key check reports them as unexpected.
    """
    out, heads = {}, []
    for key, value in state.items():
        k = re.sub(r"^(w2v_encoder\.w2v_model\.|w2v_model\.|w2v_encoder\.)", "", key)
        if _FAIRSEQ_HEADS.match(k):
            heads.append(key)
            continue
        for pattern, repl in _FAIRSEQ_RULES:
            if re.match(pattern, k):
                k = re.sub(pattern, repl, k)
                break
        else:
            k = key
        out[k] = value
    return out, sorted(heads)


def _parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """Evaluates fairseq's `conv_feature_layers` (e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4") safely."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ConversionError(f"cannot parse conv_feature_layers {spec!r}")

    layers = ev(ast.parse(spec, mode="eval"))
    return [tuple(int(v) for v in layer) for layer in layers]


DEFAULT_CONV_LAYERS = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"


def encoder_config_from_fairseq(ckpt: Mapping[str, Any]) -> tuple[EncoderConfig, str, dict]:
    """fairseq checkpoint (`cfg` dict or `args` Namespace) -> (EncoderConfig, model_type, model cfg dict)."""
    cfg = ckpt.get("cfg")
    if cfg is None and ckpt.get("args") is not None:
        mc = dict(vars(ckpt["args"]))
    elif isinstance(cfg, Mapping):
        mc = dict(cfg.get("model", cfg)) if isinstance(cfg.get("model", cfg), Mapping) else dict(cfg)
    else:
        raise ConversionError("fairseq checkpoint has neither a `cfg` dict nor `args`")
    w2v_args = mc.get("w2v_args")
    if isinstance(w2v_args, Mapping) and isinstance(w2v_args.get("model"), Mapping):
        mc = dict(w2v_args["model"])  # fine-tuned: the encoder's own pretraining config
    elif isinstance(w2v_args, argparse.Namespace):
        mc = dict(vars(w2v_args))
    name = str(mc.get("_name", mc.get("arch", "wav2vec2")))
    _require(mc.get("activation_fn", "gelu") == "gelu", f"activation_fn={mc.get('activation_fn')!r} is not supported")
    conv = _parse_conv_layers(mc.get("conv_feature_layers") or DEFAULT_CONV_LAYERS)
    mode = mc.get("extractor_mode", "default")
    _require(mode in ("default", "layer_norm"), f"extractor_mode={mode!r} is not supported")
    relative = bool(mc.get("relative_position_embedding", False))
    if relative:
        _require(mc.get("gru_rel_pos", True), "WavLM without the gated relative bias (gru_rel_pos=False) is not supported")
    depth = int(mc.get("pos_conv_depth", mc.get("conv_pos_depth", 1)) or 1)
    conv_pos = int(mc.get("conv_pos", 128))
    if depth > 1:
        conv_pos = max(3, conv_pos // depth)
    latent_dim = int(mc.get("latent_dim", 0) or 0)
    final_dim = int(mc.get("final_dim", 256) or 256)
    fields = dict(
        conv_dim=tuple(c[0] for c in conv),
        conv_kernel=tuple(c[1] for c in conv),
        conv_stride=tuple(c[2] for c in conv),
        conv_bias=bool(mc.get("conv_bias", False)),
        feat_extract_norm="group" if mode == "default" else "layer",
        hidden_size=int(mc.get("encoder_embed_dim", 768)),
        num_layers=int(mc.get("encoder_layers", 12)),
        num_heads=int(mc.get("encoder_attention_heads", 12)),
        intermediate_size=int(mc.get("encoder_ffn_embed_dim", 3072)),
        layer_norm_first=bool(mc.get("layer_norm_first", False)),
        num_conv_pos_embeddings=conv_pos,
        num_conv_pos_embedding_groups=int(mc.get("conv_pos_groups", 16)),
        num_pos_conv_layers=depth,
        relative_position_buckets=int(mc.get("num_buckets", 320)) if relative else 0,
        relative_position_max_distance=int(mc.get("max_distance", 800)),
        hidden_dropout=float(mc.get("dropout", 0.1)),
        attention_dropout=float(mc.get("attention_dropout", 0.1)),
        activation_dropout=float(mc.get("activation_dropout", 0.0)),
        feat_proj_dropout=float(mc.get("dropout_input", 0.0)),
        layerdrop=float(mc.get("encoder_layerdrop", 0.0)),
        feature_grad_scale=float(mc.get("feature_grad_mult", 1.0)),
        num_codevector_groups=int(mc.get("latent_groups", 2)),
        num_codevectors_per_group=int(mc.get("latent_vars", 320)),
        codevector_dim=latent_dim if latent_dim > 0 else final_dim,
        proj_codevector_dim=final_dim,
    )
    if relative:
        model_type = "wavlm"
    elif name.startswith("hubert"):
        model_type = "hubert"
    elif name.startswith("data2vec"):
        model_type = "data2vec-audio"
    else:
        model_type = "wav2vec2"
    return EncoderConfig(**fields), model_type, mc


def load_fairseq(path: str) -> tuple[dict, EncoderConfig, dict]:
    """Reads a fairseq `.pt` checkpoint (`cfg`/`args` + `model`) with torch.load(weights_only=True)."""
    ckpt = _torch_load(path)
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        raise ConversionError(f"{path}: not a fairseq checkpoint (no `model` state dict)")
    cfg, model_type, mc = encoder_config_from_fairseq(ckpt)
    state, heads = fairseq_state_to_canonical(_canonical_weight_norm(_numpy_state(ckpt["model"])))
    params, absent = state_to_params(state, cfg, path)
    info = {"source": "fairseq", "model_type": model_type, "weights": path, "dropped_heads": heads, "absent": absent}
    info.update(fairseq_normalize(ckpt))
    return params, cfg, info


def fairseq_normalize(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """`{"normalize": bool, "normalize_from": str}` of a fairseq checkpoint.

    fairseq-hydra keeps the flag in the task config (`cfg.task.normalize`); fine-tuned models
    also in the model config and in the pretraining task (`cfg.model.w2v_args.task`); older
    checkpoints in the flat `args` Namespace, some releases in a flat `cfg`. The first one found
    in that order wins; False when none records it.
    """
    def as_dict(node: Any) -> Mapping[str, Any]:
        if isinstance(node, argparse.Namespace):
            return vars(node)
        return node if isinstance(node, Mapping) else {}

    cfg = as_dict(ckpt.get("cfg")) or as_dict(ckpt.get("args"))
    model = as_dict(cfg.get("model"))
    w2v = as_dict(model.get("w2v_args") or cfg.get("w2v_args"))
    places = [("cfg.task", as_dict(cfg.get("task"))), ("cfg.model", model), ("cfg", cfg),
              ("w2v_args.task", as_dict(w2v.get("task"))), ("w2v_args.model", as_dict(w2v.get("model"))), ("w2v_args", w2v)]
    for where, node in places:
        if node.get("normalize") is not None:
            return {"normalize": bool(node["normalize"]), "normalize_from": f"{where}.normalize"}
    return {"normalize": False, "normalize_from": "assumed: the checkpoint records no normalize flag"}


# torchaudio ----------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# ssl_jax checkpoints


def full_config(cfg: EncoderConfig, info: Mapping[str, Any]) -> dict:
    """The config stored with a converted checkpoint: `model` builds the encoder; `convert` records the source."""
    return {"model": cfg.to_dict(), "convert": {k: v for k, v in info.items() if k in ("source", "model_type", "weights", "normalize")}}


def import_checkpoint(kind: str, src: str, out: str, torchaudio_config: Mapping[str, Any] | None = None) -> dict:
    """Converts `src` and writes an ssl_jax checkpoint to `out`; returns the info dict."""
    from ssl_jax.training.checkpoint import save_pretrained

    if kind == "hf":
        params, cfg, info = load_hf(src)
    elif kind == "fairseq":
        params, cfg, info = load_fairseq(src)
    elif kind == "torchaudio":
        params, cfg, info = load_torchaudio(src, torchaudio_config)
    else:
        raise ConversionError(f"unknown --from={kind!r}; choose hf, fairseq or torchaudio")
    info["step_dir"] = save_pretrained(out, {"encoder": params}, full_config(cfg, info))
    info["num_params"] = int(sum(np.size(x) for x in _leaves(params)))
    info["config"] = cfg
    return info


def _leaves(tree):
    if isinstance(tree, Mapping):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


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


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssl_jax.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="src_kind", choices=("hf", "fairseq", "torchaudio"))
    p.add_argument("--to", dest="dst_kind", choices=("hf",))
    p.add_argument("--src", required=True, help="source folder or file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model_type", choices=MODEL_TYPES, help="--to=hf: the transformers architecture to write")
    p.add_argument("--torchaudio_config", help="JSON file of torchaudio factory arguments (wav2vec2_model(**args))")
    args = p.parse_args(argv)
    if (args.src_kind is None) == (args.dst_kind is None):
        p.error("give exactly one of --from=hf|fairseq|torchaudio or --to=hf")
    try:
        if args.dst_kind:
            info = export_hf(args.src, args.out, args.model_type)
            print(f"exported {info['class']} ({info['config'].num_layers} layers, dim {info['config'].hidden_size}) to {args.out}; "
                  f"preprocessor_config.json do_normalize={info['normalize']}")
            return 0
        factory = None
        if args.torchaudio_config:
            with open(args.torchaudio_config) as f:
                factory = json.load(f)
        info = import_checkpoint(args.src_kind, args.src, args.out, factory)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = info["config"]
    print(f"converted {info['model_type']} from {args.src_kind}: {cfg.num_layers} layers, dim {cfg.hidden_size}, "
          f"{info['num_params']:,} parameters -> {info['step_dir']}")
    if info["dropped_heads"]:
        print(f"  dropped task/pretraining heads ({len(info['dropped_heads'])}): {info['dropped_heads'][:8]}"
              f"{' ...' if len(info['dropped_heads']) > 8 else ''}")
    if info["absent"]:
        print(f"  absent, filled with zeros: {info['absent']}")
    for note in info.get("assumed", []):
        print(f"  assumed: {note}")
    print(f"  normalize={info['normalize']} (per-utterance waveform normalisation; {info['normalize_from']}); "
          "Upstream.load(normalize=...) or --upstream_normalize overrides it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
