"""CTC fine-tuning of a pretrained encoder with greedy decoding (Baevski et al., 2020, Sec. 3.3).

  python -m ssl_jax.finetune --config=configs/finetune_ctc_tiny.py --upstream=runs/w2v2_tiny --workdir=runs/ft_tiny

`--upstream=random:configs/w2v2_tiny.py` fine-tunes the same encoder from its initial weights.

A linear CTC output layer on the encoder's last hidden state; the convolutional feature
extractor never updates; the rest of the encoder joins after `train.freeze_encoder_steps`.
Writes `WORKDIR/results.json` ({"asr": {"wer", "cer"}} or {"pr": {"per"}}, with 95% bootstrap
intervals; the selected step; with `train.compare_to=EVAL_DIR`, the paired bootstrap against
that evaluate result of the same task and test set, e.g. the FBANK probe), `WORKDIR/units.npz`
(per-utterance test errors), the selected parameters in `WORKDIR/model` (a checkpoint that
`Upstream.load` and `--upstream` read; `ctc_head` and the CTC `vocab` beside the encoder),
`WORKDIR/metrics.jsonl` and TensorBoard events under `WORKDIR/tb`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.core import meta

from ssl_jax.data.shards import ShardSource
from ssl_jax.downstream import probe, stats, tasks
from ssl_jax.models.encoder import EncoderConfig, SpeechEncoder
from ssl_jax.objectives import masking
from ssl_jax.training.logging import MetricLogger


class CTCModel(nn.Module):
    """Encoder + linear output layer over the CTC vocabulary (index 0 = blank)."""

    config: EncoderConfig
    vocab_size: int

    @nn.compact
    def __call__(self, wavs, audio_mask, mask_time_indices=None, deterministic=True):
        """wavs: [batch, samples] -> (logits [batch, frames, vocab], frame_mask [batch, frames])."""
        out = SpeechEncoder(self.config, name="encoder")(
            wavs, audio_mask, mask_time_indices=mask_time_indices, deterministic=deterministic)
        logits = nn.Dense(self.vocab_size, name="ctc_head")(out.last_hidden_state.astype(jnp.float32))
        return logits, out.frame_mask


def tri_stage(lr: float, steps: int, stages, final_scale: float) -> optax.Schedule:
    """Linear warm-up, hold, then exponential decay to `final_scale * lr` (wav2vec 2.0 fine-tuning)."""
    warm, hold = int(stages[0] * steps), int(stages[1] * steps)
    decay = max(1, steps - warm - hold)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(1, warm)), optax.constant_schedule(lr),
         optax.exponential_decay(lr, decay, final_scale)],
        [max(1, warm), max(1, warm) + hold])


def param_groups(params: Any) -> Any:
    """"head" for the output layer, "frozen" for the conv feature extractor, "encoder" for the rest."""
    def rule(path, leaf):
        keys = [getattr(k, "key", str(k)) for k in path]
        if keys[0] != "encoder":
            return "head"
        return "frozen" if len(keys) > 1 and keys[1] == "feature_extractor" else "encoder"

    return jax.tree_util.tree_map_with_path(rule, params)


def starting_at(start: int, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` from update number `start` on. Before it the updates are zero and `inner`'s state
    does not move (Adam's moments and count stay at their initial values)."""

    def init(params):
        return jnp.zeros((), jnp.int32), inner.init(params)

    def update(updates, state, params=None):
        count, inner_state = state
        new_updates, new_inner = jax.lax.cond(
            count >= start,
            lambda: inner.update(updates, inner_state, params),
            lambda: (jax.tree.map(jnp.zeros_like, updates), inner_state),
        )
        return new_updates, (count + 1, new_inner)

    return optax.GradientTransformation(init, update)


def make_optimizer(params: Any, optim: Any, schedule: optax.Schedule, freeze_steps: int) -> optax.GradientTransformation:
    """Clipping over the trainable gradients, then AdamW per group (`param_groups`): the output
    layer from the first update, the encoder after `freeze_steps` (on the same global schedule),
    the conv feature extractor never."""
    adamw = lambda lr: optax.adamw(lr, weight_decay=optim.weight_decay)  # noqa: E731
    groups = param_groups(params)
    trainable = jax.tree.map(lambda g: g != "frozen", groups)
    return optax.chain(
        optax.masked(optax.clip_by_global_norm(optim.clip_norm), trainable),
        optax.multi_transform(
            {
                "head": adamw(schedule),
                "encoder": starting_at(freeze_steps, adamw(lambda c: schedule(c + freeze_steps))),
                "frozen": optax.set_to_zero(),
            },
            groups,
        ),
    )


@dataclasses.dataclass
class Split:
    """The utterances of one split that the task uses: rows of `source`, and their targets."""

    source: ShardSource
    rows: list[int]
    targets: list[list[str]]


def load_upstream(upstream: str) -> tuple[Any, EncoderConfig, bool]:
    """The encoder at `upstream`, a checkpoint path or `random:CONFIG_PATH[:ARG]` (the recipe's
    initial weights, the control that shows what pretraining adds): (parameters, its config,
    whether it normalises waveforms)."""
    from ssl_jax.training.checkpoint import load_pretrained

    if upstream.startswith("random:"):
        from ssl_jax.downstream.upstreams import random_init

        up = random_init(upstream[len("random:"):])
        if not isinstance(up.config, EncoderConfig):
            raise ValueError(f"{upstream}: fine-tuning needs a wav2vec 2.0-family encoder, not {type(up.config).__name__}")
        return jax.tree.map(np.asarray, up.params), up.config, up.normalize
    params, up_config = load_pretrained(upstream)
    if "model" not in up_config:
        raise ValueError(f"{upstream}: the checkpoint's config has no `model` section")
    enc_params = meta.unbox(params["encoder"] if "encoder" in params else params)
    normalize = bool((up_config.get("data") or {}).get("normalize", False))
    return enc_params, EncoderConfig.from_config(up_config["model"]), normalize


def load_splits(cfg: Any, task: tasks.Task) -> dict[str, Split]:
    """train/valid/test (`cfg.data.splits`) of the corpus folder; training utterances longer than
    `data.max_seconds` are left out."""
    from ssl_jax.training.loop import shard_dir as pretraining_corpus

    shard_dir = pretraining_corpus(cfg)  # data.path, or the embedded corpus as pretraining builds it
    splits = {}
    for role, split in zip(("train", "valid", "test"), cfg.data.splits):
        src = ShardSource(shard_dir, split)
        idx = [i for i, m in enumerate(src.manifest) if task.select(m)]
        if role == "train":
            idx = [i for i in idx if src.num_samples[i] <= cfg.data.max_seconds * src.sample_rate]
        if not idx:
            raise ValueError(f"no {task.name} utterances in split {split!r} of {shard_dir}")
        splits[role] = Split(src, idx, [task.target(src.manifest[i]) for i in idx])
    return splits


@dataclasses.dataclass
class Batcher:
    """Padded batches on a few fixed lengths (evenly spaced, as the training pipeline's): one
    compiled program per bucket."""

    enc_cfg: EncoderConfig
    buckets: list[int]
    ids: dict[str, int]  # CTC label ids (0 = blank)
    normalize: bool

    def audio(self, split: Split, rows: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(wavs [batch_size, samples], mask [batch_size, samples]) for `split.rows[rows]`."""
        wavs = [split.source[split.rows[r]]["audio"] for r in rows]
        n = next(b for b in self.buckets if b >= max(len(w) for w in wavs))
        x = np.zeros((batch_size, n), np.float32)
        m = np.zeros((batch_size, n), bool)
        for j, w in enumerate(wavs):
            x[j, :len(w)], m[j, :len(w)] = w, True
        if self.normalize:
            from ssl_jax.upstream import normalize_waveforms

            x = np.asarray(normalize_waveforms(jnp.asarray(x), jnp.asarray(m)))
        return x, m

    def train(self, split: Split, rows: Any, batch_size: int) -> dict[str, np.ndarray]:
        """A training batch: wavs, mask, frame_lengths [batch], labels and label_mask [batch, labels]."""
        x, m = self.audio(split, rows, batch_size)
        frames = int(_frame_lengths(self.enc_cfg, np.array([x.shape[1]]))[0])
        targets = [split.targets[r] for r in rows]
        n = max(frames, max(len(t) for t in targets))
        labels = np.zeros((len(rows), n), np.int32)
        label_mask = np.zeros((len(rows), n), np.float32)
        for j, t in enumerate(targets):
            labels[j, :len(t)] = [self.ids[c] for c in t]
            label_mask[j, :len(t)] = 1.0
        return {"wavs": x, "mask": m, "labels": labels, "label_mask": label_mask,
                "frame_lengths": _frame_lengths(self.enc_cfg, m.sum(-1))}


def make_train_step(model: CTCModel, tx: optax.GradientTransformation, train_cfg: Any) -> Callable:
    """jitted (params, opt_state, batch, key) -> (params, opt_state, loss, grad_norm): CTC loss per
    label, time spans masked as in pretraining (`train.mask_prob`, `train.mask_length`)."""

    @jax.jit
    def train_step(params, opt_state, batch, key):
        mask_key, key = jax.random.split(key)
        frames = int(_frame_lengths(model.config, np.array([batch["wavs"].shape[1]]))[0])
        time_mask = masking.span_mask(mask_key, batch["frame_lengths"], frames,
                                      mask_prob=train_cfg.mask_prob, mask_length=train_cfg.mask_length)

        def loss_fn(p):
            logits, frame_mask = model.apply({"params": p}, batch["wavs"], batch["mask"],
                                             mask_time_indices=time_mask, deterministic=False,
                                             rngs={"dropout": key})
            per = optax.ctc_loss(logits, 1.0 - frame_mask.astype(jnp.float32), batch["labels"],
                                 1.0 - batch["label_mask"])
            return (per / jnp.maximum(batch["label_mask"].sum(-1), 1.0)).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

    return train_step


def make_scorer(model: CTCModel, batcher: Batcher, vocab: list[str], task: tasks.Task, batch_size: int) -> Callable:
    """(params, split) -> {"wer", "cer"} or {"per"} as test units (`stats.Ratio`, the probe's own
    `probe.ctc_units`): greedy CTC decoding, utterances sorted by length."""
    predict = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m, deterministic=True))

    def score(params: Any, split: Split) -> dict[str, stats.Ratio]:
        order = np.argsort([split.source.num_samples[i] for i in split.rows], kind="stable")
        hyps: list[list[str]] = [[] for _ in split.rows]
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            logits, fmask = predict(params, *batcher.audio(split, rows, batch_size))
            for r, seq in zip(rows, probe.greedy_ctc(np.asarray(logits)[:len(rows)], np.asarray(fmask)[:len(rows)])):
                hyps[r] = [vocab[k - 1] for k in seq]
        return probe.ctc_units(task, split.targets, hyps)

    return score


def probe_units_path(probe_dir: str) -> str:
    """`probe_dir/units.npz`, the per-utterance test errors an evaluate result folder keeps."""
    path = os.path.join(probe_dir, "units.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"train.compare_to: no units.npz in {probe_dir} (an evaluate result folder of one upstream)")
    return path


def compare_with_probe(units: dict[str, stats.Ratio], task: tasks.Task, probe_dir: str) -> dict[str, dict[str, float]]:
    """Paired bootstrap of the fine-tuned test units against an `evaluate` result folder of the
    same task on the same test set (e.g. the FBANK probe): {metric: {"probe", "delta", "p_value",
    "better"}}, delta = fine-tuned - probe."""
    arrays = np.load(probe_units_path(probe_dir))
    out = {}
    for metric, mine in units.items():
        if f"{task.name}/{metric}/kind" not in arrays:
            raise ValueError(f"train.compare_to: {probe_dir} holds no {task.name} {metric} result")
        theirs = stats.from_arrays(arrays, f"{task.name}/{metric}")
        if not isinstance(theirs, stats.Ratio) or not np.array_equal(theirs.den, mine.den):
            raise ValueError(f"train.compare_to: {probe_dir}'s {task.name} test set is not this one "
                             f"({theirs.num_units} utterances there, {mine.num_units} here, or other references)")
        c = stats.compare(theirs, mine, lower_is_better=True)
        out[metric] = {"probe": stats.point(theirs), "delta": c.delta, "p_value": c.p_value, "better": c.better}
    return out


def finetune(cfg, upstream: str, workdir: str, log=print, on_step=None) -> dict[str, dict[str, float]]:
    """Fine-tunes the encoder at `upstream`; returns the test metrics.

    `on_step(step, params)`, if given, is called after every update.
    """
    if cfg.data.target not in ("chars", "phonemes"):
        raise ValueError(f"data.target must be 'chars' or 'phonemes', got {cfg.data.target!r}")
    t_start = time.time()
    os.makedirs(workdir, exist_ok=True)

    # Upstream, data and vocabulary.
    task = tasks.get("asr" if cfg.data.target == "chars" else "pr")
    scored = ("wer", "cer") if task.metric == "wer" else (task.metric,)  # what `make_scorer` reports
    select = cfg.train.get("select_metric", "") or task.metric
    if select not in scored:
        raise ValueError(f"train.select_metric {select!r} is not scored for data.target={cfg.data.target!r}; "
                         f"expected one of {scored}")
    compare_to = cfg.train.get("compare_to", "")
    if compare_to:
        probe_units_path(compare_to)  # before any training
    enc_params, enc_cfg, normalize = load_upstream(upstream)
    splits = load_splits(cfg, task)
    train = splits["train"]
    vocab = sorted({t for tgt in train.targets for t in tgt})
    model = CTCModel(enc_cfg, len(vocab) + 1)
    log(f"fine-tuning {upstream}: {enc_cfg.num_layers} layers, d={enc_cfg.hidden_size}; "
        f"{len(train.rows)} training utterances, vocabulary {len(vocab)} + blank")
    from ssl_jax.data.pipeline import bucket_lengths

    longest = max(int(s.source.num_samples[i]) for s in splits.values() for i in s.rows)
    batcher = Batcher(enc_cfg, bucket_lengths(longest, cfg.data.num_buckets, multiple=3200),
                      {t: k + 1 for k, t in enumerate(vocab)}, normalize)

    # Parameters (pretrained encoder, new output layer) and optimizer.
    rng = jax.random.PRNGKey(cfg.seed)
    init_rng, rng = jax.random.split(rng)
    head_params = model.init(init_rng, *batcher.audio(train, [0], 1))["params"]["ctc_head"]
    params = {"encoder": jax.tree.map(jnp.asarray, enc_params), "ctc_head": meta.unbox(head_params)}
    schedule = tri_stage(cfg.optim.lr, cfg.train.steps, cfg.optim.stages, cfg.optim.final_lr_scale)
    freeze = cfg.train.freeze_encoder_steps
    tx = make_optimizer(params, cfg.optim, schedule, freeze)
    opt_state = tx.init(params)
    train_step = make_train_step(model, tx, cfg.train)
    score = make_scorer(model, batcher, vocab, task, cfg.train.eval_batch_size)

    # Loop: log, validate, keep the best parameters on valid.
    lengths = np.array([train.source.num_samples[i] for i in train.rows])
    order = probe._length_batches(lengths, cfg.train.batch_size, cfg.seed)
    logger = MetricLogger(workdir, tensorboard="tb")
    best, best_score, best_step, best_valid = params, float("inf"), 0, {}
    losses = []
    try:
        for step in range(cfg.train.steps):
            batch = batcher.train(train, next(order), cfg.train.batch_size)
            params, opt_state, loss, gnorm = train_step(params, opt_state, batch, jax.random.fold_in(rng, step))
            losses.append(float(loss))
            done = step + 1
            if on_step is not None:
                on_step(done, params)
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                logger.log(done, {"loss": np.mean(losses), "grad_norm": gnorm, "lr": schedule(step),
                                  "encoder_frozen": bool(step < freeze)})
                losses = []
            if done % cfg.train.eval_every == 0 or done == cfg.train.steps:
                valid = {k: stats.point(m) for k, m in score(params, splits["valid"]).items()}
                for k, v in valid.items():
                    logger.scalar(f"valid_{k}", v, done)
                log(f"step {done}: loss {float(loss):.3f}, valid {valid}")
                if valid[select] < best_score:
                    best, best_score, best_step, best_valid = params, valid[select], done, valid
    finally:
        logger.close()

    # Test the best validated parameters: metrics with 95% bootstrap intervals (as evaluate's).
    units = score(best, splits["test"])
    test = {k: stats.point(m) for k, m in units.items()}
    results = {task.name: {**test, **{f"{k}_ci": list(stats.interval(m)) for k, m in units.items()}},
               "selection": {"metric": select, "step": best_step, "valid": best_valid}}
    against = compare_with_probe(units, task, compare_to) if compare_to else {}
    if against:
        results["against_probe"] = {"probe_dir": compare_to, **against}
    from ssl_jax.training.checkpoint import save_pretrained

    save_pretrained(os.path.join(workdir, "model"), best,  # an upstream like any checkpoint; ctc_head beside it
                    {"model": enc_cfg.to_dict(), "data": {"normalize": normalize}, "finetune": cfg.to_dict(),
                     "vocab": vocab})
    np.savez(os.path.join(workdir, "units.npz"),
             **{k: v for name, m in units.items() for k, v in stats.to_arrays(m, f"{task.name}/{name}").items()})
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    log(f"fine-tuned {cfg.train.steps} steps in {time.time() - t_start:.0f}s; best valid {best_valid} "
        f"at step {best_step}; test {test}")
    for metric, c in against.items():
        mark = {1: "better", -1: "worse", 0: "not significantly different"}[c["better"]]
        log(f"{metric}: {test[metric]:.4f} against the probe's {c['probe']:.4f} ({mark}, p={c['p_value']:.3f})")
    return results


def _frame_lengths(enc_cfg: EncoderConfig, sample_lengths: np.ndarray) -> np.ndarray:
    from ssl_jax.models.encoder import frame_lengths

    return np.asarray(frame_lengths(enc_cfg, np.asarray(sample_lengths)))


if __name__ == "__main__":
    from ssl_jax.training.config_check import run_upstream_command

    run_upstream_command(finetune, "fine-tuning config (configs/finetune_ctc_tiny.py)", "pretrained ssl_jax checkpoint / workdir")
