"""The state-dict key names and shapes of released fairseq checkpoints, written out from fairseq's
module definitions (`Wav2Vec2Model`, `HubertModel`, `ConvFeatureExtractionModel`,
`TransformerEncoder`, `GumbelVectorQuantizer`) and the released hyper-parameters, so that the
converter is tested against fairseq's own naming rather than against an inverse renaming.

  wav2vec_small.pt        wav2vec 2.0 BASE (LibriSpeech 960 h), an `args` Namespace
  wav2vec_vox_new.pt      wav2vec 2.0 LARGE (LV-60k): layer-norm extractor with conv bias, pre-LN
  hubert_base_ls960.pt    HuBERT BASE, a fairseq-hydra `cfg` dict
"""

from __future__ import annotations

CONV = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
CONV_SPEC = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"

# The released models' hyper-parameters, as their checkpoints' configs hold them.
RELEASED = {
    "wav2vec_small": dict(
        arch="wav2vec2", extractor_mode="default", conv_feature_layers=CONV_SPEC, conv_bias=False,
        encoder_embed_dim=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_embed_dim=3072,
        layer_norm_first=False, conv_pos=128, conv_pos_groups=16, final_dim=256, latent_vars=320,
        latent_groups=2, latent_dim=0, activation_fn="gelu", feature_grad_mult=0.1, dropout=0.1,
        attention_dropout=0.1, activation_dropout=0.0, dropout_input=0.1, encoder_layerdrop=0.05),
    "wav2vec_vox_new": dict(
        _name="wav2vec2", extractor_mode="layer_norm", conv_feature_layers=CONV_SPEC, conv_bias=True,
        encoder_embed_dim=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_embed_dim=4096,
        layer_norm_first=True, conv_pos=128, conv_pos_groups=16, final_dim=768, latent_vars=320,
        latent_groups=2, latent_dim=0, activation_fn="gelu", feature_grad_mult=1.0, dropout=0.0,
        attention_dropout=0.1, activation_dropout=0.0, dropout_input=0.1, encoder_layerdrop=0.0),
    "hubert_base_ls960": dict(
        _name="hubert", extractor_mode="default", conv_feature_layers=CONV_SPEC, conv_bias=False,
        encoder_embed_dim=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_embed_dim=3072,
        layer_norm_first=False, conv_pos=128, conv_pos_groups=16, final_dim=256, activation_fn="gelu",
        feature_grad_mult=0.1, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
        dropout_input=0.1, encoder_layerdrop=0.05, label_rate=50),
}

# Keys that are pretraining heads, not encoder weights (the converter drops them).
HEADS = {
    "wav2vec_small": {"quantizer.vars", "quantizer.weight_proj.weight", "quantizer.weight_proj.bias",
                      "project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias"},
    "hubert_base_ls960": {"final_proj.weight", "final_proj.bias", "label_embs_concat"},
}
HEADS["wav2vec_vox_new"] = HEADS["wav2vec_small"]


def state_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the released checkpoint's `model` state dict."""
    c = RELEASED[name]
    d, ffn = c["encoder_embed_dim"], c["encoder_ffn_embed_dim"]
    out: dict[str, tuple[int, ...]] = {"mask_emb": (d,)}
    # ConvFeatureExtractionModel: each block is Sequential(conv, dropout, norm, GELU); "default"
    # mode has a GroupNorm (one group per channel) on the first block only, "layer_norm" mode a
    # Sequential(TransposeLast, Fp32LayerNorm, TransposeLast) on every block.
    in_dim = 1
    for i, (dim, kernel, _) in enumerate(CONV):
        out[f"feature_extractor.conv_layers.{i}.0.weight"] = (dim, in_dim, kernel)
        if c["conv_bias"]:
            out[f"feature_extractor.conv_layers.{i}.0.bias"] = (dim,)
        if c["extractor_mode"] == "layer_norm":
            out[f"feature_extractor.conv_layers.{i}.2.1.weight"] = out[f"feature_extractor.conv_layers.{i}.2.1.bias"] = (dim,)
        elif i == 0:
            out[f"feature_extractor.conv_layers.{i}.2.weight"] = out[f"feature_extractor.conv_layers.{i}.2.bias"] = (dim,)
        in_dim = dim
    out["layer_norm.weight"] = out["layer_norm.bias"] = (in_dim,)  # over the extractor's features
    out["post_extract_proj.weight"], out["post_extract_proj.bias"] = (d, in_dim), (d,)
    # TransformerEncoder: a weight-normalised grouped conv (dim=2) as positional embedding.
    out["encoder.pos_conv.0.weight_g"] = (1, 1, c["conv_pos"])
    out["encoder.pos_conv.0.weight_v"] = (d, d // c["conv_pos_groups"], c["conv_pos"])
    out["encoder.pos_conv.0.bias"] = (d,)
    out["encoder.layer_norm.weight"] = out["encoder.layer_norm.bias"] = (d,)
    for i in range(c["encoder_layers"]):
        p = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out[p + f"self_attn.{proj}.weight"], out[p + f"self_attn.{proj}.bias"] = (d, d), (d,)
        out[p + "self_attn_layer_norm.weight"] = out[p + "self_attn_layer_norm.bias"] = (d,)
        out[p + "fc1.weight"], out[p + "fc1.bias"] = (ffn, d), (ffn,)
        out[p + "fc2.weight"], out[p + "fc2.bias"] = (d, ffn), (d,)
        out[p + "final_layer_norm.weight"] = out[p + "final_layer_norm.bias"] = (d,)
    final = c["final_dim"]
    if name.startswith("hubert"):
        out["final_proj.weight"], out["final_proj.bias"] = (final, d), (final,)
        out["label_embs_concat"] = (504, final)  # 500 clusters + fairseq's 4 special symbols
    else:
        # GumbelVectorQuantizer on the extractor's features; codevectors of final_dim / groups.
        groups, num_vars = c["latent_groups"], c["latent_vars"]
        out["quantizer.vars"] = (1, groups * num_vars, final // groups)
        out["quantizer.weight_proj.weight"] = (groups * num_vars, in_dim)
        out["quantizer.weight_proj.bias"] = (groups * num_vars,)
        out["project_q.weight"], out["project_q.bias"] = (final, final), (final,)
        out["final_proj.weight"], out["final_proj.bias"] = (final, d), (final,)
    return out
