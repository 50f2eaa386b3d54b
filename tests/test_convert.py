"""Tests for ssl_jax/convert/: parity with transformers on random small models of every variant,
fairseq and torchaudio key naming, round trips and clear errors.

torchaudio checkpoints come from torchaudio's own model builders (the `[torch]` extra pins a
torch/torchaudio pair that installs together).
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

from ssl_jax import convert  # noqa: E402
from tests import fairseq_released  # noqa: E402
from ssl_jax.models.encoder import SpeechEncoder  # noqa: E402

pytestmark = pytest.mark.torch

TOL = 3e-5
SMALL = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
    conv_dim=(8, 8, 8), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2),
    num_conv_pos_embeddings=6, num_conv_pos_embedding_groups=2,
)
VARIANTS = {
    "wav2vec2-group": ("Wav2Vec2", {}),
    "wav2vec2-layer-bias-stable": ("Wav2Vec2", dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)),
    "hubert-group": ("Hubert", {}),
    "hubert-layer-stable": ("Hubert", dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)),
    "wavlm-group": ("WavLM", dict(num_buckets=16, max_bucket_distance=40)),
    "wavlm-layer-stable": ("WavLM", dict(num_buckets=16, max_bucket_distance=40, feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)),
    "data2vec-audio": ("Data2VecAudio", dict(num_conv_pos_embeddings=3, conv_pos_kernel_size=5, conv_bias=True)),
}
LENGTHS = (4000, 2500, 1333)
LARGEST = {}


def build_hf(variant: str, seed: int = 0, **extra):
    """A random transformers encoder of `variant`, with perturbed LayerNorms so they matter."""
    family, kw = VARIANTS[variant]
    config = getattr(transformers, f"{family}Config")(**{**SMALL, **kw, **extra})
    torch.manual_seed(seed)
    model = getattr(transformers, f"{family}Model")(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "gru_rel_pos_const" in name or "masked_spec_embed" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def batch(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    wavs = rng.standard_normal((len(lengths), max(lengths))).astype(np.float32)
    mask = np.arange(wavs.shape[1])[None] < np.array(lengths)[:, None]
    return np.where(mask, wavs, 0.0).astype(np.float32), mask


def hf_hidden_states(model, wavs, lengths, padded: bool):
    """Per item (unpadded) or as one padded batch with attention_mask; list over items of [layers+1] arrays."""
    with torch.no_grad():
        if padded:
            mask = torch.from_numpy(np.arange(wavs.shape[1])[None] < np.array(lengths)[:, None]).long()
            out = model(torch.from_numpy(wavs), attention_mask=mask, output_hidden_states=True)
            hs = [h.numpy() for h in out.hidden_states]
            frames = convert.frame_lengths_of(model.config, np.array(lengths))
            return [[h[b, : frames[b]] for h in hs] for b in range(len(lengths))]
        items = []
        for b, n in enumerate(lengths):
            out = model(torch.from_numpy(wavs[b: b + 1, :n]), output_hidden_states=True)
            items.append([h[0].numpy() for h in out.hidden_states])
        return items


def max_layer_diff(ours, ref_items):
    """Largest |difference| over every layer and every item's valid frames."""
    worst = 0.0
    for b, ref in enumerate(ref_items):
        assert len(ref) == len(ours.hidden_states)
        for r, o in zip(ref, ours.hidden_states):
            n = r.shape[0]
            assert int(ours.frame_mask[b].sum()) == n
            worst = max(worst, float(np.abs(np.asarray(o[b, :n]) - r).max()))
    return worst


def run_ours(params, cfg, wavs, mask):
    return jax.jit(lambda p, w, m: SpeechEncoder(cfg).apply({"params": p}, w, m))(params, wavs, mask)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hf_parity_and_round_trip(variant, tmp_path):
    model = build_hf(variant)
    src = tmp_path / "hf"
    model.save_pretrained(src, safe_serialization=True)
    params, cfg, info = convert.load_hf(str(src))
    assert info["model_type"] == model.config.model_type and info["absent"] == []
    wavs, mask = batch()
    ours = run_ours(params, cfg, wavs, mask)
    # transformers is not padding-invariant for group-norm extractors (statistics include the
    # padding) nor for data2vec-audio's stacked positional convs (conv bias leaks from padded
    # frames into the last valid ones); ssl_jax is, so those compare per item, as transformers
    # itself recommends. The others are also compared on transformers' own padded batch.
    diffs = [max_layer_diff(ours, hf_hidden_states(model, wavs, LENGTHS, padded=False))]
    if cfg.feat_extract_norm == "layer" and cfg.num_pos_conv_layers == 1:
        diffs.append(max_layer_diff(ours, hf_hidden_states(model, wavs, LENGTHS, padded=True)))
    LARGEST[variant] = max(diffs)
    print(f"\n{variant}: largest |diff| over all layers = {max(diffs):.3g}")
    assert max(diffs) <= TOL

    # Round trip: ssl_jax checkpoint -> transformers folder -> same outputs as the original.
    ckpt = tmp_path / "ssl"
    convert.import_checkpoint("hf", str(src), str(ckpt))
    out = tmp_path / "back"
    convert.export_hf(str(ckpt), str(out))
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    back = type(model).from_pretrained(out).eval()
    ref = hf_hidden_states(model, wavs, LENGTHS[:1], padded=False)[0]
    got = hf_hidden_states(back, wavs, LENGTHS[:1], padded=False)[0]
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, atol=1e-6)


def test_pytorch_bin_and_heads_are_dropped(tmp_path):
    model = build_hf("wav2vec2-group")
    ctc = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**{**SMALL, "vocab_size": 7}))
    ctc.wav2vec2.load_state_dict(model.state_dict())
    ctc.config.save_pretrained(tmp_path)  # transformers 5 writes safetensors only: write the .bin by hand
    torch.save(ctc.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / "pytorch_model.bin").exists()
    params, cfg, info = convert.load_hf(str(tmp_path))
    assert info["dropped_heads"] == ["lm_head.bias", "lm_head.weight"]
    ref, _, _ = convert.load_hf(_save(model, tmp_path / "plain"))
    jax.tree.map(np.testing.assert_array_equal, params, ref)


def _save(model, path):
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


def test_wrong_architecture_and_bad_keys_are_clear_errors(tmp_path):
    model = build_hf("wav2vec2-group")
    src = _save(model, tmp_path / "hf")
    with open(os.path.join(src, "config.json")) as f:
        hf = json.load(f)
    with pytest.raises(convert.ConversionError, match="unsupported architecture"):
        convert.encoder_config_from_hf({**hf, "model_type": "sew"})
    cfg, _ = convert.encoder_config_from_hf(hf)
    state = convert._canonical_weight_norm({k: v.numpy() for k, v in model.state_dict().items()})
    bad = dict(state)
    del bad["encoder.layers.1.final_layer_norm.bias"]
    bad["encoder.layers.2.final_layer_norm.bias"] = np.zeros(16, np.float32)
    with pytest.raises(convert.ConversionError) as e:
        convert.state_to_params(bad, cfg)
    assert "encoder.layers.1.final_layer_norm.bias" in str(e.value)
    assert "encoder.layers.2.final_layer_norm.bias" in str(e.value)
    # A WavLM checkpoint read with a wav2vec 2.0 config: its extra keys are listed.
    wavlm_state = convert._canonical_weight_norm({k: v.numpy() for k, v in build_hf("wavlm-group").state_dict().items()})
    with pytest.raises(convert.ConversionError, match="gru_rel_pos_linear"):
        convert.state_to_params(wavlm_state, cfg)
    # Wrong shapes are reported too.
    wrong = dict(state)
    wrong["feature_projection.projection.weight"] = np.zeros((16, 9), np.float32)
    with pytest.raises(convert.ConversionError, match="wrong shapes"):
        convert.state_to_params(wrong, cfg)
    # Through the command line: a clear message and exit status 2.
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump({**hf, "model_type": "unispeech"}, f)
    assert convert.main(["--from=hf", f"--src={src}", f"--out={tmp_path / 'x'}"]) == 2


# fairseq ------------------------------------------------------------------------------------

def to_fairseq(state, prefix=""):
    """Renames transformers keys to fairseq's (the inverse of what the converter reads)."""
    rules = [
        (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
        (r"^feature_projection\.layer_norm\.", "layer_norm."),
        (r"^feature_projection\.projection\.", "post_extract_proj."),
        (r"^masked_spec_embed$", "mask_emb"),
        (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
        (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
        (r"^encoder\.pos_conv_embed\.conv\.bias$", "encoder.pos_conv.0.bias"),
        (r"^encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.", r"encoder.pos_conv.\1.0."),
        (r"\.attention\.rel_attn_embed\.", ".self_attn.relative_attention_bias."),
        (r"\.attention\.gru_rel_pos_linear\.", ".self_attn.grep_linear."),
        (r"\.attention\.gru_rel_pos_const$", ".self_attn.grep_a"),
        (r"\.attention\.", ".self_attn."),
        (r"^(encoder\.layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm."),
        (r"\.feed_forward\.intermediate_dense\.", ".fc1."),
        (r"\.feed_forward\.output_dense\.", ".fc2."),
    ]
    import re

    out = {}
    for k, v in state.items():
        for pat, rep in rules:
            k = re.sub(pat, rep, k)
        m = re.match(r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)$", k)
        if m:
            k = f"feature_extractor.conv_layers.{m.group(1)}.2.{m.group(2)}"
        out[prefix + k] = v
    return out


def fairseq_cfg(model, name):
    c = model.config
    d2v = c.model_type == "data2vec-audio"
    conv = " + ".join(f"[({d}, {k}, {s})]" for d, k, s in zip(c.conv_dim, c.conv_kernel, c.conv_stride))
    mc = {
        "_name": name, "extractor_mode": "layer_norm" if d2v or c.feat_extract_norm == "layer" else "default",
        "conv_feature_layers": conv, "conv_bias": c.conv_bias, "encoder_embed_dim": c.hidden_size,
        "encoder_layers": c.num_hidden_layers, "encoder_attention_heads": c.num_attention_heads,
        "encoder_ffn_embed_dim": c.intermediate_size, "layer_norm_first": getattr(c, "do_stable_layer_norm", False),
        "conv_pos_groups": c.num_conv_pos_embedding_groups, "activation_fn": "gelu", "feature_grad_mult": 0.1,
    }
    if d2v:
        mc.update(conv_pos=c.conv_pos_kernel_size * c.num_conv_pos_embeddings, pos_conv_depth=c.num_conv_pos_embeddings)
    else:
        mc.update(conv_pos=c.num_conv_pos_embeddings)
    if c.model_type == "wavlm":
        mc.update(relative_position_embedding=True, num_buckets=c.num_buckets, max_distance=c.max_bucket_distance, gru_rel_pos=True)
    return mc


@pytest.mark.parametrize(
    "variant,name,layout",
    [("wav2vec2-group", "wav2vec2", "pretrain"), ("hubert-layer-stable", "hubert", "pretrain"),
     ("wavlm-group", "wavlm", "flat"), ("data2vec-audio", "data2vec_audio", "finetuned")],
)
def test_fairseq_import(variant, name, layout, tmp_path):
    model = build_hf(variant)
    hf_params, _, _ = convert.load_hf(_save(model, tmp_path / "hf"))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    # fairseq layer-norm extractors nest the LayerNorm: conv_layers.i.2.1.weight.
    fs = to_fairseq(sd, "w2v_encoder.w2v_model." if layout == "finetuned" else "")
    if model.config.model_type == "data2vec-audio" or model.config.feat_extract_norm == "layer":
        fs = {k.replace(".2.weight", ".2.1.weight").replace(".2.bias", ".2.1.bias") if "conv_layers" in k else k: v
              for k, v in fs.items()}
    mc = fairseq_cfg(model, name)
    if layout == "pretrain":
        fs["quantizer.vars"] = torch.zeros(1, 4, 2)
        fs["final_proj.weight"] = torch.zeros(2, 16)
        ckpt = {"cfg": {"model": mc, "task": {"normalize": False}}, "model": fs}
    elif layout == "finetuned":
        fs["w2v_encoder.proj.weight"] = torch.zeros(5, 16)
        ckpt = {"cfg": {"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": mc}}}, "model": fs}
    else:  # WavLM releases keep a flat cfg
        ckpt = {"cfg": {**mc, "normalize": True}, "model": fs}
    path = tmp_path / "model.pt"
    torch.save(ckpt, path)
    params, cfg, info = convert.load_fairseq(str(path))
    assert info["model_type"] == model.config.model_type
    assert cfg.feature_grad_scale == 0.1
    jax.tree.map(np.testing.assert_array_equal, params, hf_params)
    if layout != "flat":
        assert info["dropped_heads"]
    # An unknown key is listed, not ignored.
    ckpt["model"]["encoder.layers.0.self_attn.extra.weight"] = torch.zeros(2)
    torch.save(ckpt, path)
    with pytest.raises(convert.ConversionError, match="extra"):
        convert.load_fairseq(str(path))


@pytest.mark.parametrize("name", sorted(fairseq_released.RELEASED))
def test_fairseq_released_key_names_and_shapes(name, tmp_path):
    """Every key of a released checkpoint (names and shapes from fairseq's modules, not from the
    converter's rules) is read into the encoder or dropped as a head, and the shapes fit."""
    import argparse

    shapes = fairseq_released.state_shapes(name)
    # Stride-0 tensors: the real shapes, one stored element each.
    state = {k: torch.full((1,) * len(s), 0.5).expand(*s) for k, s in shapes.items()}
    mc = fairseq_released.RELEASED[name]
    ckpt = {"args": argparse.Namespace(**mc)} if "arch" in mc else {"cfg": {"model": mc, "task": {"normalize": False}}}
    torch.save({**ckpt, "model": state}, tmp_path / f"{name}.pt")
    params, cfg, info = convert.load_fairseq(str(tmp_path / f"{name}.pt"))
    assert info["dropped_heads"] == sorted(fairseq_released.HEADS[name]) and info["absent"] == []
    assert info["model_type"] == ("hubert" if name.startswith("hubert") else "wav2vec2")
    assert (cfg.hidden_size, cfg.num_layers, cfg.layer_norm_first) == (
        mc["encoder_embed_dim"], mc["encoder_layers"], mc["layer_norm_first"])
    # Every encoder weight arrived, one parameter per key, with all its values.
    encoder_keys = set(shapes) - fairseq_released.HEADS[name]
    assert len(jax.tree.leaves(params)) == len(encoder_keys)
    assert sum(x.size for x in jax.tree.leaves(params)) == sum(int(np.prod(shapes[k])) for k in encoder_keys)


def test_fairseq_conv_layer_spec_is_parsed_safely():
    assert convert._parse_conv_layers(convert.DEFAULT_CONV_LAYERS) == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    with pytest.raises(convert.ConversionError):
        convert._parse_conv_layers("__import__('os').getcwd()")


# torchaudio ---------------------------------------------------------------------------------

TA_CONV = [(4, 10, 5)] + [(4, 3, 2)] * 4 + [(4, 2, 2)] * 2  # the released kernels and strides, 4 channels
_HUBERT_MASKING = dict(mask_prob=0.5, mask_selection="static", mask_other=0.0, mask_length=2, no_mask_overlap=False,
                       mask_min_space=1, mask_channel_prob=0.0, mask_channel_selection="static", mask_channel_other=0.0,
                       mask_channel_length=1, no_mask_channel_overlap=False, mask_channel_min_space=1, skip_masked=False,
                       skip_nomask=False, feature_grad_mult=None)
TA_VARIANTS = {
    # builder, its arguments beyond the shared ones below
    "wav2vec2-group-postln": ("wav2vec2_model", dict(extractor_mode="group_norm", extractor_conv_bias=False, encoder_layer_norm_first=False,
                                                     aux_num_out=3)),
    "wav2vec2-layer-preln": ("wav2vec2_model", dict(extractor_mode="layer_norm", extractor_conv_bias=True, encoder_layer_norm_first=True,
                                                    aux_num_out=None)),
    "wavlm-group-postln": ("wavlm_model", dict(extractor_mode="group_norm", extractor_conv_bias=False, encoder_layer_norm_first=False,
                                               encoder_num_buckets=16, encoder_max_distance=40, aux_num_out=None)),
    "hubert-pretrain-layer-preln": ("hubert_pretrain_model", dict(extractor_mode="layer_norm", extractor_conv_bias=True,
                                                                  encoder_layer_norm_first=True, num_classes=5, final_dim=8,
                                                                  **_HUBERT_MASKING)),
}


def build_torchaudio(variant: str, seed: int = 0):
    """A random model from torchaudio's own builder; returns (model, its encoder model, factory)."""
    torchaudio = pytest.importorskip("torchaudio")
    builder, kw = TA_VARIANTS[variant]
    factory = dict(extractor_conv_layer_config=TA_CONV, encoder_embed_dim=16, encoder_projection_dropout=0.0,
                   encoder_pos_conv_kernel=6, encoder_pos_conv_groups=2, encoder_num_layers=3, encoder_num_heads=2,
                   encoder_attention_dropout=0.0, encoder_ff_interm_features=24, encoder_ff_interm_dropout=0.0,
                   encoder_dropout=0.0, encoder_layer_drop=0.0, **kw)
    torch.manual_seed(seed)
    model = getattr(torchaudio.models, builder)(**factory).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "gru_rel_pos" in name or "mask_embedding" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model, getattr(model, "wav2vec2", model), factory


def torchaudio_outputs(encoder, wav: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Every Transformer layer's output (`extract_features`) and the encoder output (after the
    final LayerNorm of a pre-LN model; before any aux head), for one unpadded waveform."""
    with torch.no_grad():
        x = torch.from_numpy(wav[None])
        layers, _ = encoder.extract_features(x)
        final = encoder.encoder(encoder.feature_extractor(x, None)[0], None)
    return [h[0].numpy() for h in layers], final[0].numpy()


@pytest.mark.parametrize("variant", list(TA_VARIANTS))
def test_torchaudio_parity(variant, tmp_path):
    """Checkpoints saved from torchaudio's own builders (not a renaming written here): the state
    dict loads by its real key names, and the encoder's layers match torchaudio's outputs."""
    model, encoder, factory = build_torchaudio(variant)
    path = tmp_path / "ta.pt"
    torch.save(model.state_dict(), path)
    params, cfg, info = convert.load_torchaudio(str(path), factory)
    assert info["model_type"] == ("wavlm" if "wavlm" in variant else "wav2vec2") and info["assumed"] == []
    if "hubert" in variant:
        assert info["absent"] == [] and info["dropped_heads"] == ["logit_generator.final_proj.bias", "logit_generator.final_proj.weight",
                                                                  "logit_generator.label_embeddings"]
        np.testing.assert_array_equal(params["mask_embedding"], model.mask_generator.mask_embedding.detach().numpy())
    else:
        assert info["absent"] == ["masked_spec_embed"]
        assert info["dropped_heads"] == (["aux.bias", "aux.weight"] if factory["aux_num_out"] else [])
    lengths = (4000, 2500)
    wavs, mask = batch(lengths)
    ours = run_ours(params, cfg, wavs, mask)
    worst = 0.0
    for b, n in enumerate(lengths):
        layers, final = torchaudio_outputs(encoder, wavs[b, :n])
        frames = int(ours.frame_mask[b].sum())
        assert len(ours.hidden_states) == len(layers) + 1 and final.shape[0] == frames
        for r, o in zip(layers + [final], ours.hidden_states[1:] + (ours.last_hidden_state,)):
            worst = max(worst, float(np.abs(np.asarray(o[b, :frames]) - r).max()))
    print(f"\n{variant}: largest |diff| over the layers = {worst:.3g}")
    assert worst <= TOL

    # Without factory arguments the geometry is read from the weight shapes; the head count comes
    # from WavLM's bias table, else from the 64-dims-per-head rule of the released models (here 1).
    _, guessed, info2 = convert.load_torchaudio(str(path))
    assert guessed.conv_dim == cfg.conv_dim and guessed.layer_norm_first == cfg.layer_norm_first and info2["assumed"]
    assert guessed.num_heads == (2 if "wavlm" in variant else 1)


# command line --------------------------------------------------------------------------------

def test_command_line_import_and_export(tmp_path, capsys):
    model = build_hf("wavlm-group")
    src = _save(model, tmp_path / "hf")
    assert convert.main(["--from=hf", f"--src={src}", f"--out={tmp_path / 'ssl'}"]) == 0
    assert "converted wavlm" in capsys.readouterr().out
    assert convert.main(["--to=hf", f"--src={tmp_path / 'ssl'}", f"--out={tmp_path / 'back'}"]) == 0
    back = transformers.WavLMModel.from_pretrained(tmp_path / "back").eval()
    wavs, _ = batch((3000,))
    with torch.no_grad():
        a = model(torch.from_numpy(wavs)).last_hidden_state.numpy()
        b = back(torch.from_numpy(wavs)).last_hidden_state.numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)


class Payload:
    """An arbitrary Python object that weights_only loading must refuse."""


def test_sharded_safetensors_and_refused_pickles(tmp_path):
    from safetensors.torch import save_file

    model = build_hf("hubert-group")
    ref, _, _ = convert.load_hf(_save(model, tmp_path / "one"))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    model.config.save_pretrained(sharded)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = sorted(state)
    halves = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2:]}
    for name, ks in halves.items():
        save_file({k: state[k] for k in ks}, sharded / name)
    with open(sharded / "model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": {k: n for n, ks in halves.items() for k in ks}}, f)
    params, _, _ = convert.load_hf(str(sharded))
    jax.tree.map(np.testing.assert_array_equal, params, ref)

    torch.save({"model": {}, "cfg": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(convert.ConversionError, match="weights_only"):
        convert.load_fairseq(str(tmp_path / "evil.pt"))


# normalisation flag --------------------------------------------------------------------------

def test_hf_normalize_flag_is_carried_both_ways(tmp_path, capsys):
    from ssl_jax import Upstream

    model = build_hf("wav2vec2-layer-bias-stable")
    src = _save(model, tmp_path / "hf")
    # Without preprocessor_config.json: False, and the conversion says it assumed so.
    assert convert.main(["--from=hf", f"--src={src}", f"--out={tmp_path / 'plain'}"]) == 0
    out = capsys.readouterr().out
    assert "normalize=False" in out and "no preprocessor_config.json" in out
    assert Upstream.load(str(tmp_path / "plain")).normalize is False
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(src)
    assert convert.main(["--from=hf", f"--src={src}", f"--out={tmp_path / 'ssl'}"]) == 0
    out = capsys.readouterr().out
    assert "normalize=True" in out and "do_normalize" in out
    assert Upstream.load(str(tmp_path / "ssl")).normalize is True
    assert Upstream.load(str(tmp_path / "ssl"), normalize=False).normalize is False
    assert Upstream.load(str(tmp_path / "plain"), normalize=True).normalize is True
    # Export writes the flag back into a preprocessor_config.json transformers reads.
    assert convert.main(["--to=hf", f"--src={tmp_path / 'ssl'}", f"--out={tmp_path / 'back'}"]) == 0
    assert "do_normalize=True" in capsys.readouterr().out
    fe = transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "back")
    assert fe.do_normalize is True and fe.return_attention_mask is True
    convert.export_hf(str(tmp_path / "plain"), str(tmp_path / "back_plain"))
    assert transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "back_plain").do_normalize is False


def test_fairseq_normalize_is_found_where_fairseq_keeps_it():
    import argparse

    found = convert.fairseq_normalize
    assert found({"cfg": {"model": {"_name": "wav2vec2"}, "task": {"normalize": True}}}) == {
        "normalize": True, "normalize_from": "cfg.task.normalize"}
    finetuned = {"cfg": {"model": {"_name": "wav2vec_ctc", "w2v_args": {"task": {"normalize": True}, "model": {}}}, "task": {}}}
    assert found(finetuned)["normalize"] is True
    assert found({"cfg": {"_name": "wavlm", "normalize": True}})["normalize_from"] == "cfg.normalize"
    assert found({"args": argparse.Namespace(normalize=True, arch="wav2vec2")})["normalize"] is True
    absent = found({"cfg": {"model": {"_name": "hubert"}, "task": {"_name": "hubert_pretraining"}}})
    assert absent["normalize"] is False and absent["normalize_from"].startswith("assumed")
