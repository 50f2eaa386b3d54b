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

One module per format: `hf`, `fairseq`, `torchaudio`; `names` holds the canonical names and checks,
`weights` the torch reading; `cli` the command line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_jax.convert.fairseq import (DEFAULT_CONV_LAYERS, _parse_conv_layers, encoder_config_from_fairseq,
                                     fairseq_normalize, fairseq_state_to_canonical, load_fairseq)
from ssl_jax.convert.hf import (encoder_config_from_hf, export_hf, frame_lengths_of, hf_config_from_encoder,
                                hf_normalize, infer_model_type, load_hf)
from ssl_jax.convert.names import (HF_MODEL_CLASSES, HF_PREFIXES, MODEL_TYPES, OPTIONAL_KEYS, ConversionError,
                                   canonical_keys, check_keys, params_to_state, state_to_params)
from ssl_jax.convert.torchaudio import encoder_config_from_torchaudio, load_torchaudio, torchaudio_state_to_canonical
from ssl_jax.convert.weights import _canonical_weight_norm
from ssl_jax.models.encoder import EncoderConfig

__all__ = [
    "ConversionError", "DEFAULT_CONV_LAYERS", "HF_MODEL_CLASSES", "HF_PREFIXES", "MODEL_TYPES", "OPTIONAL_KEYS",
    "canonical_keys", "check_keys", "encoder_config_from_fairseq", "encoder_config_from_hf",
    "encoder_config_from_torchaudio", "export_hf", "fairseq_normalize", "fairseq_state_to_canonical",
    "frame_lengths_of", "full_config", "hf_config_from_encoder", "hf_normalize", "import_checkpoint",
    "infer_model_type", "load_fairseq", "load_hf", "load_torchaudio", "main", "params_to_state",
    "state_to_params", "torchaudio_state_to_canonical", "_canonical_weight_norm", "_parse_conv_layers",
]


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


from ssl_jax.convert.cli import main  # noqa: E402  (the command line needs the functions above)
