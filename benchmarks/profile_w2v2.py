"""Where a wav2vec 2.0 BASE pretraining step spends its time: ssl_jax against transformers.

  python benchmarks/profile_w2v2.py --batch=4 --seconds=4 --steps=5

Times, forward+backward, in alternating rounds (the same machine load on both frameworks):
the conv feature extractor alone, the Transformer stack alone (12 layers on the projected
features), the full pretraining step, and the [tokens, dim] x [dim, 4 dim] matmul that
dominates the Transformer. Prints each part's seconds per step, GFLOP/s (XLA's count of the
ssl_jax program) and the ratio torch / ssl_jax.
"""

from __future__ import annotations

import os
import sys

from absl import app

from ssl_jax import bench  # its flags: --batch, --seconds, --steps


def parts(batch: int, seconds: float) -> dict:
    """{part: (jax_fn, torch_fn, flops)} for the BASE recipe."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from ssl_jax.models.encoder import EncoderConfig, FeatureExtractor
    from ssl_jax.models.transformer import TransformerEncoder
    from ssl_jax.training.compiled import program_facts
    from ssl_jax.training.config_check import load_config_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = bench.bench_config(load_config_file(os.path.join(root, "configs", "w2v2_base.py")))
    samples = int(round(seconds * bench.SAMPLE_RATE))
    inputs = bench.make_inputs(bench.prepared(config), batch, samples)
    cfg = EncoderConfig.from_config(config.model)
    out = {}

    # Forward+backward of the whole objective: what `python -m ssl_jax.bench --compare=torch` times.
    jax_fns, jinfo = bench.jax_programs(config, inputs)
    torch_fns, _ = bench.torch_programs(config, inputs, jinfo["params"])
    out["full step"] = (jax_fns["fwd_bwd"], torch_fns["fwd_bwd"], jinfo["programs"]["fwd_bwd"]["flops"])

    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from ssl_jax.convert import hf_config_from_encoder

    kw = hf_config_from_encoder(cfg, "wav2vec2")
    kw.update(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)
    hf = Wav2Vec2Model(Wav2Vec2Config(**kw)).train()
    audio = jnp.asarray(inputs["audio"])
    lengths = jnp.full((batch,), samples)

    # Conv feature extractor.
    fe = FeatureExtractor(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride, cfg.conv_bias, cfg.feat_extract_norm,
                          jnp.float32)
    fe_params = fe.init(jax.random.key(0), audio, lengths)
    frames_out = fe.apply(fe_params, audio, lengths)[0]
    r = jax.random.normal(jax.random.key(3), frames_out.shape)
    fe_grad = jax.jit(jax.grad(lambda p: jnp.sum(fe.apply(p, audio, lengths)[0] * r))).lower(fe_params).compile()
    ta = torch.from_numpy(np.asarray(audio))
    tr = torch.from_numpy(np.asarray(r)).transpose(1, 2)

    def torch_fe():
        hf.zero_grad(set_to_none=True)
        (hf.feature_extractor(ta) * tr).sum().backward()

    out["conv extractor"] = (lambda: jax.block_until_ready(fe_grad(fe_params)), torch_fe, program_facts(fe_grad)["flops"])

    # Transformer stack on projected features.
    tfm = TransformerEncoder(cfg)
    x = jax.random.normal(jax.random.key(4), (batch, frames_out.shape[1], cfg.hidden_size))
    mask = jnp.ones(x.shape[:2], bool)
    t_params = tfm.init(jax.random.key(0), x, mask)
    rx = jax.random.normal(jax.random.key(5), x.shape)
    t_grad = jax.jit(jax.grad(lambda p: jnp.sum(tfm.apply(p, x, mask)[1] * rx))).lower(t_params).compile()
    tx_, trx = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(rx))

    def torch_tfm():
        hf.zero_grad(set_to_none=True)
        (hf.encoder(tx_).last_hidden_state * trx).sum().backward()

    out["transformer"] = (lambda: jax.block_until_ready(t_grad(t_params)), torch_tfm, program_facts(t_grad)["flops"])

    # The FFN's first matmul, forward.
    a = jax.random.normal(jax.random.key(6), (batch * x.shape[1], cfg.hidden_size))
    w = jax.random.normal(jax.random.key(7), (cfg.hidden_size, cfg.intermediate_size))
    mm = jax.jit(jnp.matmul).lower(a, w).compile()
    tA, tW = torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(w))
    out["ffn matmul"] = (lambda: jax.block_until_ready(mm(a, w)), lambda: tA @ tW, program_facts(mm)["flops"])
    return out


def main(argv: list[str]) -> None:
    import numpy as np


    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    table = parts(bench._BATCH.value, bench._SECONDS.value)
    fns = {}
    for name, (j, t, _) in table.items():
        fns[(name, "jax")], fns[(name, "torch")] = j, t
    times = bench._interleaved_times(fns, bench._STEPS.value)
    print(f"{bench._BATCH.value} x {bench._SECONDS.value:.1f} s, {os.cpu_count()} CPUs; median of {bench._STEPS.value} alternating rounds")
    print(f"{'part':<16}{'ssl_jax s':>11}{'torch s':>10}{'GFLOP':>9}{'jax GF/s':>10}{'torch GF/s':>12}{'torch/jax':>11}")
    for name, (_, _, flops) in table.items():
        j, t = np.median(times[(name, "jax")]), np.median(times[(name, "torch")])
        print(f"{name:<16}{j:>11.3f}{t:>10.3f}{flops / 1e9:>9.1f}{flops / j / 1e9:>10.0f}{flops / t / 1e9:>12.0f}{t / j:>11.2f}")


if __name__ == "__main__":
    sys.exit(app.run(main))
