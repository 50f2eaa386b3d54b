"""`python -m ssl_jax.convert`: the command line of the package."""

from __future__ import annotations

import argparse
import json
import sys

from ssl_jax import convert
from ssl_jax.convert.names import MODEL_TYPES, ConversionError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssl_jax.convert", description=convert.__doc__.split("\n\n")[0])
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
            info = convert.export_hf(args.src, args.out, args.model_type)
            print(f"exported {info['class']} ({info['config'].num_layers} layers, dim {info['config'].hidden_size}) to {args.out}; "
                  f"preprocessor_config.json do_normalize={info['normalize']}")
            return 0
        factory = None
        if args.torchaudio_config:
            with open(args.torchaudio_config) as f:
                factory = json.load(f)
        info = convert.import_checkpoint(args.src_kind, args.src, args.out, factory)
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
