"""fairseq checkpoints (`.pt` with `cfg` or `args` and `model`): wav2vec 2.0, HuBERT, WavLM, data2vec-audio."""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_jax.convert.names import ConversionError, _require, state_to_params
from ssl_jax.convert.weights import _canonical_weight_norm, _numpy_state, _torch_load
from ssl_jax.models.encoder import EncoderConfig

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
