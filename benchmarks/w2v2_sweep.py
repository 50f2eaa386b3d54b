"""Recorded sweep of wav2vec 2.0 settings at small compute: which choices make features that beat FBANK.

    python benchmarks/w2v2_sweep.py --out runs/sweep [--config configs/w2v2_tiny.py] [--steps 800]
        [--only logmel,logmel_paper_mask] [--list]

Each variant is the base recipe plus a few `--config.` overrides, trained with
`python -m ssl_jax.train` for the same number of steps into `OUT/NAME` (a finished run is
reused; delete its folder to redo it). The table ranks the variants by the in-training
across-speaker word ABX of the best layer (`train.abx_probe`: isolated words of held-out
evaluation voices, the layer chosen on the dev half of the words and scored on the test half;
lower is better), and gives the held-out contrastive accuracy and codebook perplexity beside it,
which do not rank features (a variant can win the pretext task and make worse features).
FBANK's ABX on the same probe set is measured in the same run (`fbank` row). Writes
`OUT/results.md` and `OUT/results.json`.

The ABX words are the `abx_words` split of the evaluation corpus, so choosing settings on them
and then reporting `evaluate`'s ABX on all of that split is optimistic for the chosen settings;
the SUPERB-style probes of `evaluate` do not see these words.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The variants were recorded against w2v2_tiny with a 32-frame positional conv; they name it so
# that the table reproduces with any default of the recipe.
POS32 = {"model.num_conv_pos_embeddings": 32}
LOGMEL = {"model.frontend": "logmel", **POS32}
AUGMENT = {"data.augment.noise.prob": 0.3, "data.augment.reverb.prob": 0.3, "data.augment.pitch.prob": 0.3,
           "data.augment.speed.prob": 0.3}

# name -> (what it tests, overrides). Every variant but `conv` reads log-mel.
VARIANTS: dict[str, tuple[str, dict]] = {
    "conv": ("waveform conv extractor (the paper's front end)", {"model.frontend": "conv", **POS32}),
    "logmel": ("log-mel front end", LOGMEL),
    "logmel_uttnorm": ("log-mel standardised per utterance", {**LOGMEL, "model.logmel_norm": "utterance"}),
    "logmel_augment": ("augmentation: noise, reverb, pitch, speed at p=0.3 each", {**LOGMEL, **AUGMENT}),
    "logmel_d256": ("d=256, 6 layers, FFN 1024 at the same steps", {
        **LOGMEL, "model.hidden_size": 256, "model.num_layers": 6, "model.intermediate_size": 1024,
        "model.num_conv_pos_embedding_groups": 16}),
    "logmel_paper_mask": ("paper masking: p=0.065 x M=10 (mask_prob 0.65)", {
        **LOGMEL, "objective.mask_prob": 0.65, "objective.mask_length": 10}),
    "logmel_k100": ("K=100 distractors", {**LOGMEL, "objective.num_negatives": 100}),
    "logmel_v320": ("2 x 320 codebook entries", {**LOGMEL, "model.num_codevectors_per_group": 320}),
    "logmel_slow_gumbel": ("Gumbel temperature decayed 10x slower (0.9995)", {
        **LOGMEL, "objective.gumbel_temperature": "(2.0,0.5,0.9995)"}),
    "logmel_lr2e-3": ("peak lr 2e-3", {**LOGMEL, "optim.lr": 2e-3}),
    "logmel_pos8": ("conv positional embedding over 8 frames (160 ms) instead of 32", {
        **LOGMEL, "model.num_conv_pos_embeddings": 8}),
    "logmel_pos8_small": ("pos8 at w2v2_small's width and depth (d=256, 6 layers, FFN 1024)", {
        **LOGMEL, "model.num_conv_pos_embeddings": 8, "model.hidden_size": 256, "model.num_layers": 6,
        "model.intermediate_size": 1024, "model.num_conv_pos_embedding_groups": 16}),
}


def _override(key: str, value) -> str:
    return f"--config.{key}={value}"


def run_variant(name: str, overrides: dict, args) -> dict:
    workdir = os.path.join(args.out, name)
    summary_path = os.path.join(workdir, "summary.json")
    if not os.path.exists(summary_path) or json.load(open(summary_path))["steps"] < args.steps:
        cmd = [sys.executable, "-m", "ssl_jax.train", f"--config={args.config}", f"--workdir={workdir}",
               _override("train.steps", args.steps), _override("train.abx_probe.speakers", args.speakers)]
        cmd += [_override(k, v) for k, v in overrides.items()]
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        with open(os.path.join(args.out, f"{name}.log"), "w") as log:
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
        print(f"  {name}: {time.time() - t0:.0f}s", flush=True)
    summary = json.load(open(summary_path))
    end = summary["eval_end"] or {}
    return {"name": name, "overrides": overrides, "steps": summary["steps"],
            "train_seconds": summary["wall_seconds"], "params": summary["num_params"],
            "accuracy": end.get("accuracy"), "perplexity": end.get("perplexity"),
            "abx_word": end.get("abx_word"), "abx_layer": end.get("abx_layer"),
            "abx_layers": [end[k] for k in sorted((k for k in end if k.startswith("abx_word_l")),
                                                  key=lambda k: int(k[len("abx_word_l"):]))]}


def fbank_abx(args) -> dict:
    """The probe's ABX for FBANK (80 log-mel bands, 10 ms hop, as `evaluate --upstream=fbank`), as is
    and standardised per utterance and band (CMVN), the choice `model.logmel_norm` makes."""
    import numpy as np

    from ssl_jax.downstream import abx, upstreams
    from ssl_jax.training.abx_probe import AbxProbe
    from ssl_jax.training.config_check import load_config_file

    config = load_config_file(args.config)
    probe = AbxProbe(config.model, speakers=args.speakers, triplets=config.train.abx_probe.triplets,
                     seed=config.train.abx_probe.seed)
    up = upstreams.fbank()
    feats = up.embed(probe.wavs, batch_size=16)
    cmvn = [(f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-5) for f in feats]
    out = {}
    for name, f in (("fbank", feats), ("fbank_uttnorm", cmvn)):
        res = abx.evaluate_abx([np.asarray(x, np.float32) for x in f], up.frame_rate, probe.items,
                               max_triplets=probe.triplets, seed=probe.seed, num_resamples=100, log=lambda _: None)
        out[name] = {"name": name, "what": "FBANK" + (" + CMVN" if name.endswith("uttnorm") else ""),
                     "overrides": {}, "abx_word": res.error, "abx_layer": res.layer,
                     "abx_layers": res.layer_errors.tolist()}
    return out


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def write_table(rows: list[dict], args) -> str:
    lines = [f"# wav2vec 2.0 sweep: {os.path.relpath(args.config, ROOT)}, {args.steps} steps each",
             "", "ABX: across-speaker word ABX error (%) of the best layer (chosen on dev words, scored on "
             "test words; lower is better), in-training probe on "
             f"{args.speakers} held-out voices. acc / ppl: held-out contrastive accuracy and codebook perplexity.", "",
             "| variant | what | ABX % | layer | ABX per layer % | acc | ppl | train s | params |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["abx_word"] is None, r["abx_word"] or 0.0)):
        what = VARIANTS.get(r["name"], (r.get("what", ""), None))[0]
        per_layer = " / ".join(f"{100 * e:.1f}" for e in r["abx_layers"])
        lines.append(f"| {r['name']} | {what} | {_fmt(100 * r['abx_word'], '.2f')} | {_fmt(r['abx_layer'], '.0f')} "
                     f"| {per_layer} | {_fmt(r.get('accuracy'), '.3f')} | {_fmt(r.get('perplexity'), '.0f')} "
                     f"| {_fmt(r.get('train_seconds'), '.0f')} | {_fmt(r.get('params'), ',')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="", help="folder of the runs and the results table")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "w2v2_tiny.py"))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--speakers", type=int, default=12, help="ABX probe speakers")
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    args = p.parse_args()
    if args.list:
        for name, (what, overrides) in VARIANTS.items():
            print(f"{name:20s} {what}: {overrides}")
        return
    if not args.out:
        p.error("--out is required (a folder for the runs and the table)")
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    os.makedirs(args.out, exist_ok=True)
    rows = list(fbank_abx(args).values())
    for name in VARIANTS:  # the requested ones, and every other finished run in OUT
        summary = os.path.join(args.out, name, "summary.json")
        finished = os.path.exists(summary) and json.load(open(summary))["steps"] >= args.steps
        if name not in names and not finished:
            continue
        rows.append(run_variant(name, VARIANTS[name][1], args))
        table = write_table(rows, args)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(table)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(rows, f, indent=2)
    print(table)


if __name__ == "__main__":
    main()
