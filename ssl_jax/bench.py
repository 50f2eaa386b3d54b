"""`python -m ssl_jax.bench --config=configs/w2v2_base.py [--compare=torch] [--json]`.

Times one pretraining forward+backward step of the config's encoder (wav2vec 2.0 objective:
masking, quantizer, contrastive loss), reports audio-seconds per second and achieved FLOP/s
(XLA's cost analysis of the compiled step) against a matmul peak measured in the same run,
and with `--compare=torch` times transformers' `Wav2Vec2ForPreTraining` on the same shapes,
masks and distractors in the same process, the two steps alternating so that both see the same
machine load. Dropout and layer drop are off in both, so the
two do the same work on every step.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe whose model is timed.", lock_config=True)
_COMPARE = flags.DEFINE_enum("compare", None, ["torch"], "Also time the PyTorch reference.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
_BATCH = flags.DEFINE_integer("batch", 4, "Utterances per step.")
_SECONDS = flags.DEFINE_float("seconds", 8.0, "Seconds of audio per utterance.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the peak measurement.")

SAMPLE_RATE = 16_000


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


def matmul_peak(n: int, steps: int = 5) -> float:
    """Best FLOP/s of an [n, n] x [n, n] float32 jnp matmul on this machine."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    _, best = _best_time(lambda: f(a, b).block_until_ready(), steps)
    return 2.0 * n**3 / best


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


def jax_step(config: Any, inputs: dict) -> tuple[Callable[[], Any], dict]:
    """The compiled ssl_jax forward+backward step as a blocking callable, and its FLOP count."""
    import flax.linen as nn
    import jax
    import optax

    from ssl_jax import objectives

    objective = prepared(config)
    batch = {k: jax.device_put(v) for k, v in inputs.items()}
    params = jax.jit(lambda k: nn.unbox(objective.init(k, batch)))(jax.random.key(0))
    state = jax.jit(lambda k: nn.unbox(objective.init_state(k, batch)))(jax.random.key(2))
    state = jax.jit(objective.start_state)(state, params)

    def step(params, batch, rng):
        (loss, _), grads = jax.value_and_grad(objective.loss, has_aux=True)(params, batch, rng, 0, True, state)
        return loss, optax.tree.norm(grads)

    compiled = jax.jit(step).lower(params, batch, jax.random.key(1)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    num_params = sum(x.size for x in jax.tree.leaves(params))
    info = {"flops_per_step": flops, "num_params": int(num_params)}
    return (lambda: jax.block_until_ready(compiled(params, batch, jax.random.key(1)))), info


def torch_step(config: Any, inputs: dict) -> tuple[Callable[[], Any], dict]:
    """transformers' Wav2Vec2ForPreTraining forward+backward on the same shapes (imported lazily),
    as a callable, and facts about the model."""
    import numpy as np
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    from ssl_jax.convert import hf_config_from_encoder
    from ssl_jax.models.encoder import EncoderConfig

    m, o = config.model, config.objective
    kw = hf_config_from_encoder(EncoderConfig.from_config(m), "wav2vec2")
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
    hf = Wav2Vec2Config(**kw)
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(hf).train()
    audio = torch.from_numpy(inputs["audio"].copy())
    mask = torch.from_numpy(inputs["mask_time_indices"].copy())
    idx = inputs["negative_indices"].astype(np.int64)
    # transformers indexes the flattened [batch * frames] features.
    neg = torch.from_numpy(idx + np.arange(idx.shape[0])[:, None, None] * idx.shape[1])
    attention = torch.from_numpy(inputs["audio_mask"].copy()).long() if m.feat_extract_norm == "layer" else None

    def step():
        model.zero_grad(set_to_none=True)
        out = model(audio, attention_mask=attention, mask_time_indices=mask, sampled_negative_indices=neg)
        out.loss.backward()

    info = {"num_params": int(sum(p.numel() for p in model.parameters())), "threads": torch.get_num_threads()}
    return step, info


def _interleaved_times(fns: dict[str, Callable[[], Any]], steps: int) -> dict[str, list[float]]:
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


def run(config: Any, *, batch: int, seconds: float, steps: int, compare: str | None, matmul_size: int) -> dict:
    import jax
    import numpy as np

    config = bench_config(config)
    samples = int(round(seconds * SAMPLE_RATE))
    from ssl_jax import objectives

    inputs = make_inputs(objectives.build(config), batch, samples)
    if compare == "torch" and config.objective.name != "wav2vec2":
        raise ValueError(f"--compare=torch times transformers' Wav2Vec2ForPreTraining; {config.objective.name!r} has no such reference here")
    audio_seconds = batch * samples / SAMPLE_RATE
    load_before = os.getloadavg()[0]
    peak = matmul_peak(matmul_size)
    fns, infos = {}, {}
    fns["jax"], infos["jax"] = jax_step(config, inputs)
    if compare == "torch":
        fns["torch"], infos["torch"] = torch_step(config, inputs)
    times = _interleaved_times(fns, steps)
    result = {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "batch": batch,
        "seconds": seconds,
        "matmul_peak_flops": peak,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    for name in fns:
        result[name] = {
            "step_seconds": float(np.median(times[name])),
            "best_step_seconds": float(np.min(times[name])),
            **infos[name],
        }
    j = result["jax"]
    j["audio_seconds_per_second"] = audio_seconds / j["step_seconds"]
    j["flops_per_second"] = j["flops_per_step"] / j["step_seconds"]
    j["fraction_of_matmul_peak"] = j["flops_per_second"] / peak
    if compare == "torch":
        t = result["torch"]
        t["audio_seconds_per_second"] = audio_seconds / t["step_seconds"]
        t["flops_per_second"] = j["flops_per_step"] / t["step_seconds"]  # same model, XLA's count
        # Per-round ratios: each round's two steps ran back to back under the same load.
        ratios = np.asarray(times["torch"]) / np.asarray(times["jax"])
        result["speedup_vs_torch"] = t["step_seconds"] / j["step_seconds"]
        result["speedup_per_round"] = [float(r) for r in ratios]
    return result


def format_result(r: dict) -> str:
    lines = [
        f"{r['batch']} x {r['seconds']:.1f} s audio, backend {r['backend']} ({r['devices']} device(s), {r['cpu_count']} CPUs)",
        f"matmul peak: {r['matmul_peak_flops'] / 1e9:.1f} GFLOP/s",
        f"{'impl':<8}{'step s':>10}{'audio s/s':>12}{'GFLOP/s':>10}{'% peak':>9}",
    ]
    for name in ("jax", "torch"):
        if name in r:
            x = r[name]
            lines.append(
                f"{name:<8}{x['step_seconds']:>10.3f}{x['audio_seconds_per_second']:>12.2f}"
                f"{x['flops_per_second'] / 1e9:>10.1f}{100 * x['flops_per_second'] / r['matmul_peak_flops']:>8.0f}%"
            )
    if "speedup_vs_torch" in r:
        lines.append(f"ssl_jax is {r['speedup_vs_torch']:.2f}x the speed of transformers' Wav2Vec2ForPreTraining")
        rounds = " ".join(f"{x:.2f}" for x in r["speedup_per_round"])
        lines.append(f"  ratio in each round (steps alternate): {rounds}")
    lines.append(f"load average (1 min) before / after: {r['load_average'][0]:.2f} / {r['load_average'][1]:.2f}")
    lines.append(f"FLOP per step (XLA cost analysis): {r['jax']['flops_per_step']:.3g}")
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

    from ssl_jax.training.config_check import check_overrides

    check_overrides(sys.argv)
    flags.mark_flags_as_required(["config"])
    app.run(main)
