"""`python -m ssl_jax.bench --config=configs/w2v2_base.py [--compare=torch] [--json]`.

Times the recipe's pretraining forward+backward pass and its full train step (the trainer's own
step: gradient clipping, AdamW, the objective's state update) in alternating rounds, and
reports the median and spread of each, audio-seconds per second and the model FLOP
utilisation: XLA's cost analysis of the compiled program against the device's peak (the
datasheet dense bf16 peak of a known GPU/TPU; on CPU a matmul peak measured in the same run in
the model's compute dtype). The start-up also gives each program's memory (compiled memory
analysis: arguments, outputs, scratch).

With `--compare=torch` (wav2vec 2.0 recipes with the conv front end) transformers'
`Wav2Vec2ForPreTraining` runs on the same weights, shapes, masks and distractors in the same
process, its steps alternating with ours so that both see the same machine load, and the two
objectives' contrastive and diversity terms are compared on one batch (`loss_parity`). Dropout
and LayerDrop are off in both, so the two do the same work on every step.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import app, flags
from ml_collections import config_flags

from ssl_jax.data.shards import SAMPLE_RATE

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe whose model is timed.", lock_config=True)
_COMPARE = flags.DEFINE_enum("compare", None, ["torch"], "Also time the PyTorch reference.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
_BATCH = flags.DEFINE_integer("batch", 4, "Utterances per step.")
_SECONDS = flags.DEFINE_float("seconds", 8.0, "Seconds of audio per utterance.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed rounds (after one warm-up call of each program).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Largest square matmul of the CPU peak measurement.")

# Dense bf16 peak FLOP/s per chip from the vendors' datasheets, by `jax.Device.device_kind` prefix.
DATASHEET_BF16_PEAK = {
    "NVIDIA H200": 989e12,
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100": 989e12,  # SXM
    "NVIDIA B200": 2250e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
}


def _best_time(fn: Callable[[], Any], steps: int) -> tuple[float, float]:
    """(median, min) seconds of `fn` over `steps` runs after one warm-up run."""
    import numpy as np

    fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), float(np.min(times))


def matmul_peak(n: int, steps: int = 5, dtype: str = "float32") -> float:
    """Best FLOP/s of square jnp matmuls of sizes n / 2 and n on this machine (the best of
    `steps` runs of each, so a noisy moment does not lower the peak)."""
    import jax
    import jax.numpy as jnp

    best_rate = 0.0
    for size in (max(n // 2, 1), n):
        a = jax.random.normal(jax.random.key(0), (size, size), dtype)
        b = jax.random.normal(jax.random.key(1), (size, size), dtype)
        f = jax.jit(jnp.matmul)
        _, best = _best_time(lambda: f(a, b).block_until_ready(), steps)
        best_rate = max(best_rate, 2.0 * size**3 / best)
    return best_rate


def device_peak(matmul_size: int, dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for MFU: a known accelerator's datasheet bf16 peak,
    else (CPU, unknown chips) the matmul peak measured now in the compute dtype."""
    import jax

    kind = jax.devices()[0].device_kind
    if jax.default_backend() != "cpu":
        for prefix, peak in DATASHEET_BF16_PEAK.items():
            if kind.startswith(prefix):
                return peak * jax.device_count(), f"datasheet bf16 peak of {jax.device_count()} x {kind}"
    return matmul_peak(matmul_size, dtype=dtype), f"measured {dtype} matmul peak ({kind})"


def bench_config(config: Any) -> Any:
    """The config with dropout and layer drop off (identical work per step in both frameworks)."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        for k in ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "layerdrop"):
            if k in config.model:
                config.model[k] = 0.0
    return config


def make_inputs(objective: Any, batch: int, samples: int, seed: int = 0) -> dict:
    """Random audio and full masks; for contrastive objectives (the ones `--compare=torch`
    measures) also the span masks and distractor indices both frameworks share. Other
    objectives draw their masks and views inside the step, as in training."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ssl_jax.objectives import masking

    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((batch, samples))).astype(np.float32)
    audio_mask = np.ones((batch, samples), bool)
    if not hasattr(objective, "num_negatives"):
        return {"audio": audio, "audio_mask": audio_mask}
    frames = objective.num_frames(samples)
    mask = masking.span_mask(
        jax.random.key(seed),
        jnp.full((batch,), frames),
        frames,
        mask_prob=objective.mask_prob,
        mask_length=objective.mask_length,
        min_masks=objective.min_masks,
    )
    neg, _ = masking.sample_negatives(jax.random.key(seed + 1), mask, objective.num_negatives)
    return {"audio": audio, "audio_mask": audio_mask, "mask_time_indices": np.asarray(mask),
            "negative_indices": np.asarray(neg)}


def prepared(config: Any) -> Any:
    """The recipe's objective after its host-side preparation (k-means codebooks are loaded, or
    fitted once on the recipe's data and cached, as a training run would)."""
    import tempfile

    from ssl_jax import objectives
    from ssl_jax.training.loop import shard_dir

    objective = objectives.build(config)
    with tempfile.TemporaryDirectory() as workdir:
        objective.prepare(shard_dir(config), workdir)
    return objective


def jax_programs(config: Any, inputs: dict) -> tuple[dict[str, Callable[[], Any]], dict]:
    """The compiled ssl_jax programs as blocking callables, {"fwd_bwd": ..., "train_step": ...},
    and facts: parameter count, the initial parameters (for the reference) and each program's
    `compiled_facts`."""
    import flax.linen as nn
    import jax
    import optax

    from ssl_jax.training import state as state_lib
    from ssl_jax.training.compiled import program_facts
    from ssl_jax.training.loop import make_train_step
    from ssl_jax.training.optimizer import make_optimizer

    objective = prepared(config)
    batch = {k: jax.device_put(v) for k, v in inputs.items()}
    params = jax.jit(lambda k: nn.unbox(objective.init(k, batch)))(jax.random.key(0))
    obj_state = jax.jit(lambda k: nn.unbox(objective.init_state(k, batch)))(jax.random.key(2))
    obj_state = jax.jit(objective.start_state)(obj_state, params)
    rng = jax.random.key(1)

    def fwd_bwd(params, batch, rng):
        (loss, _), grads = jax.value_and_grad(objective.loss, has_aux=True)(params, batch, rng, 0, True, obj_state)
        return loss, optax.tree.norm(grads)

    tx, schedule = make_optimizer(config.optim, int(config.train.steps))
    state = state_lib.TrainState.create(params, tx, obj_state)
    fb = jax.jit(fwd_bwd).lower(params, batch, rng).compile()
    ts = jax.jit(make_train_step(objective, tx, schedule, 1), donate_argnums=(0,)).lower(state, batch, rng).compile()
    held = {"state": jax.tree.map(lambda x: x.copy(), state)}  # the step donates (consumes) its input state

    def train_step():
        held["state"], metrics = ts(held["state"], batch, rng)
        jax.block_until_ready(metrics)

    info = {
        "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
        "params": params,
        "programs": {"fwd_bwd": program_facts(fb), "train_step": program_facts(ts)},
        # The deterministic objective on this batch, run only when the reference is compared.
        "eval_metrics": lambda: jax.device_get(objective.loss(params, batch, rng, 0, False, obj_state)[1]),
    }
    return {"fwd_bwd": lambda: jax.block_until_ready(fb(params, batch, rng)), "train_step": train_step}, info


def _hf_pretraining_state(params: Any, cfg: Any) -> dict:
    """ssl_jax wav2vec 2.0 pretraining parameters -> `Wav2Vec2ForPreTraining` state dict (numpy)."""
    import numpy as np

    from ssl_jax.convert import params_to_state

    state = {f"wav2vec2.{k}": v for k, v in params_to_state(params["encoder"], cfg).items()}
    q = params["quantizer"]
    state["quantizer.codevectors"] = np.asarray(q["codevectors"])[None]
    state["quantizer.weight_proj.weight"] = np.asarray(q["weight_proj"]["kernel"]).T
    state["quantizer.weight_proj.bias"] = np.asarray(q["weight_proj"]["bias"])
    for name in ("project_q", "project_hid"):
        state[f"{name}.weight"] = np.asarray(params[name]["kernel"]).T
        state[f"{name}.bias"] = np.asarray(params[name]["bias"])
    return {k: np.array(v, dtype=np.float32) for k, v in state.items()}  # writable copies for torch


def torch_programs(config: Any, inputs: dict, params: Any) -> tuple[dict[str, Callable[[], Any]], dict]:
    """transformers' Wav2Vec2ForPreTraining (imported lazily) on ssl_jax's initial weights:
    {"fwd_bwd": ..., "train_step": ...} (the train step adds gradient clipping and AdamW with
    the recipe's settings), and facts: parameter count, threads, and the contrastive and
    diversity terms on the shared batch with argmax codes (see `loss_parity`)."""
    import numpy as np
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    from ssl_jax.convert import hf_config_from_encoder
    from ssl_jax.models.encoder import EncoderConfig

    m, o = config.model, config.objective
    cfg = EncoderConfig.from_config(m)
    kw = hf_config_from_encoder(cfg, "wav2vec2")
    kw.update(
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        feat_quantizer_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        num_negatives=o.num_negatives,
        contrastive_logits_temperature=o.temperature,
        diversity_loss_weight=o.diversity_weight,
        mask_time_prob=0.05,  # creates the mask embedding; the masks themselves are passed in
    )
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config(**kw)).train()
    state = {k: torch.from_numpy(v) for k, v in _hf_pretraining_state(params, cfg).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("masked_spec_embed")]:
        raise RuntimeError(f"transformers weights do not line up: missing {missing}, unexpected {unexpected}")
    audio = torch.from_numpy(inputs["audio"].copy())
    mask = torch.from_numpy(inputs["mask_time_indices"].copy())
    idx = inputs["negative_indices"].astype(np.int64)
    # transformers indexes the flattened [batch * frames] features.
    neg = torch.from_numpy(idx + np.arange(idx.shape[0])[:, None, None] * idx.shape[1])
    attention = torch.from_numpy(inputs["audio_mask"].copy()).long() if m.feat_extract_norm == "layer" else None
    optim = config.optim
    opt = torch.optim.AdamW(model.parameters(), lr=float(optim.lr), betas=(float(optim.b1), float(optim.b2)),
                            eps=float(optim.eps), weight_decay=float(optim.weight_decay))

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        out = model(audio, attention_mask=attention, mask_time_indices=mask, sampled_negative_indices=neg)
        out.loss.backward()

    def train_step():
        fwd_bwd()
        if float(optim.clip_norm) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(optim.clip_norm))
        opt.step()

    with torch.no_grad(), _argmax_gumbel():
        out = model(audio, attention_mask=attention, mask_time_indices=mask, sampled_negative_indices=neg)
    masked = float(mask.sum())
    info = {
        "num_params": int(sum(p.numel() for p in model.parameters())),
        "threads": torch.get_num_threads(),
        # transformers sums both terms over the masked frames; ssl_jax averages them.
        "contrastive": float(out.contrastive_loss) / masked,
        "diversity": float(out.diversity_loss) / masked,
    }
    return {"fwd_bwd": fwd_bwd, "train_step": train_step}, info


class _argmax_gumbel:
    """Within the block, torch's `gumbel_softmax(logits, hard=True)` returns the one-hot argmax
    of the logits (no noise): transformers' quantizer in training mode then picks the codes that
    ssl_jax's deterministic quantizer picks, while its perplexity stays the soft one that both
    objectives train with."""

    def __enter__(self):
        import torch

        self._saved = torch.nn.functional.gumbel_softmax

        def argmax_one_hot(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):  # noqa: ARG001
            return torch.nn.functional.one_hot(logits.argmax(dim), logits.shape[dim]).to(logits.dtype)

        torch.nn.functional.gumbel_softmax = argmax_one_hot
        return self

    def __exit__(self, *exc):
        import torch

        torch.nn.functional.gumbel_softmax = self._saved
        return False


def _interleaved_times(fns: dict[Any, Callable[[], Any]], steps: int) -> dict[Any, list[float]]:
    """Seconds per call of each function, calls alternating (after one warm-up call each), so a
    change in machine load during the run falls on every implementation alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def _spread(times: list[float]) -> dict:
    import numpy as np

    t = np.asarray(times)
    return {"median": float(np.median(t)), "min": float(t.min()), "max": float(t.max()),
            "rounds": [float(x) for x in t]}


def run(config: Any, *, batch: int, seconds: float, steps: int, compare: str | None, matmul_size: int) -> dict:
    """Times the recipe (and the reference with `compare="torch"`); the dict `--json` prints."""
    import jax
    import numpy as np

    from ssl_jax import objectives

    config = bench_config(config)
    samples = int(round(seconds * SAMPLE_RATE))
    if compare == "torch" and (config.objective.name != "wav2vec2" or config.model.frontend != "conv"):
        raise ValueError(
            "--compare=torch times transformers' Wav2Vec2ForPreTraining: it needs objective.name 'wav2vec2' and "
            f"model.frontend 'conv', got {config.objective.name!r} and {config.model.get('frontend')!r}"
        )
    inputs = make_inputs(objectives.build(config), batch, samples)
    audio_seconds = batch * samples / SAMPLE_RATE
    load_before = os.getloadavg()[0]
    peak, peak_source = device_peak(matmul_size, str(config.model.get("dtype", "float32")))
    fns, infos = {}, {}
    jax_fns, infos["jax"] = jax_programs(config, inputs)
    fns.update({("jax", k): f for k, f in jax_fns.items()})
    if compare == "torch":
        torch_fns, infos["torch"] = torch_programs(config, inputs, infos["jax"]["params"])
        fns.update({("torch", k): f for k, f in torch_fns.items()})
    del infos["jax"]["params"]
    times = _interleaved_times(fns, steps)
    result = {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "dtype": str(config.model.get("dtype", "float32")),
        "remat": str(config.model.get("remat", "none")),
        "batch": batch,
        "seconds": seconds,
        "rounds": steps,
        "peak_flops": peak,
        "peak_source": peak_source,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    programs = infos["jax"].pop("programs")
    eval_metrics = infos["jax"].pop("eval_metrics")
    for impl in ("jax", "torch"):
        if impl not in infos:
            continue
        r = result[impl] = dict(infos[impl])
        for prog in ("fwd_bwd", "train_step"):
            p = r[prog] = _spread(times[(impl, prog)])
            flops = programs[prog]["flops"]  # XLA's count of the ssl_jax program: the same model
            p["audio_seconds_per_second"] = audio_seconds / p["median"]
            p["flops_per_second"] = flops / p["median"]
            p["mfu"] = p["flops_per_second"] / peak
            if impl == "jax":
                p.update({k: v for k, v in programs[prog].items()})
    if compare == "torch":
        t = result.pop("torch")
        for k in ("contrastive", "diversity"):
            t.pop(k)
        result["torch"] = t
        for prog in ("fwd_bwd", "train_step"):
            ratios = np.asarray(times[("torch", prog)]) / np.asarray(times[("jax", prog)])
            result[f"speedup_vs_torch_{prog}"] = {
                "median_ratio": t[prog]["median"] / result["jax"][prog]["median"],
                "rounds": [float(x) for x in ratios],  # each round's two calls ran back to back
            }
        ours = eval_metrics()
        parity = {k: {"ssl_jax": float(ours[k]), "transformers": infos["torch"][k]} for k in ("contrastive", "diversity")}
        parity["max_relative_difference"] = max(
            abs(v["ssl_jax"] - v["transformers"]) / max(abs(v["transformers"]), 1e-12) for v in parity.values()
        )
        result["loss_parity"] = parity
    return result


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def format_result(r: dict) -> str:
    lines = [
        f"{r['batch']} x {r['seconds']:.1f} s audio, {r['dtype']}, remat {r['remat']}, backend {r['backend']} "
        f"({r['devices']} x {r['device_kind']}, {r['cpu_count']} CPUs), median of {r['rounds']} alternating rounds",
        f"peak: {r['peak_flops'] / 1e9:.1f} GFLOP/s ({r['peak_source']})",
        f"{'impl':<8}{'program':<12}{'median s':>10}{'min-max s':>15}{'audio s/s':>11}{'GFLOP/s':>10}{'MFU':>7}",
    ]
    for name in ("jax", "torch"):
        for prog in ("fwd_bwd", "train_step"):
            if name in r:
                x = r[name][prog]
                lines.append(
                    f"{name:<8}{prog:<12}{x['median']:>10.3f}{x['min']:>7.3f}-{x['max']:<7.3f}"
                    f"{x['audio_seconds_per_second']:>11.2f}{x['flops_per_second'] / 1e9:>10.1f}{100 * x['mfu']:>6.0f}%"
                )
    for prog in ("fwd_bwd", "train_step"):
        key = f"speedup_vs_torch_{prog}"
        if key in r:
            rounds = " ".join(f"{x:.2f}" for x in r[key]["rounds"])
            lines.append(f"{prog}: ssl_jax is {r[key]['median_ratio']:.2f}x transformers' speed (rounds: {rounds})")
    if "loss_parity" in r:
        lp = r["loss_parity"]
        lines.append(
            "loss parity (argmax codes, same weights, masks, distractors): "
            + ", ".join(f"{k} {lp[k]['ssl_jax']:.6g} vs {lp[k]['transformers']:.6g}" for k in ("contrastive", "diversity"))
            + f" (max relative difference {lp['max_relative_difference']:.1e})"
        )
    for prog in ("fwd_bwd", "train_step"):
        x = r["jax"][prog]
        lines.append(
            f"{prog}: {x['flops']:.3g} FLOP (XLA cost analysis); MiB arguments {_mib(x['argument_bytes'])}, "
            f"outputs {_mib(x['output_bytes'])}, scratch {_mib(x['temp_bytes'])} (compiled memory analysis)"
        )
    lines.append(f"load average (1 min) before / after: {r['load_average'][0]:.2f} / {r['load_average'][1]:.2f}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = run(
        _CONFIG.value,
        batch=_BATCH.value,
        seconds=_SECONDS.value,
        steps=_STEPS.value,
        compare=_COMPARE.value,
        matmul_size=_MATMUL.value,
    )
    print(json.dumps(result, indent=2) if _JSON.value else format_result(result), flush=True)


if __name__ == "__main__":
    import sys

    from ssl_jax.training.config_check import check_overrides, user_errors

    check_overrides(sys.argv)
    flags.mark_flags_as_required(["config"])
    app.run(user_errors(main))
