"""Frozen-upstream probing: cached layer features, weighted-sum heads, early-stopped training.

Every hidden state of the upstream is extracted once per split and kept in memory
(float16), standardised per layer and dimension with statistics of the training split
(the same rule for every upstream). Heads train with AdamW in one jitted step per batch
shape; the validation metric picks the best parameters (early stopping), and the test
split is scored once with them (SUPERB protocol, Yang et al., 2021).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.downstream import heads, metrics
from ssl_jax.downstream.tasks import Task


class UpstreamFn(Protocol):
    """What the probe needs of an upstream (fbank or `ssl_jax.Upstream`)."""

    frame_rate: float

    def __call__(self, wavs: np.ndarray, lengths: np.ndarray) -> Any:
        """wavs: [batch, samples], lengths: [batch] -> object with `hidden_states`, `lengths`."""


# --------------------------------------------------------------------------- features

def bucket(n: int, base: int = 32, ratio: float = 1.25, multiple: int = 16) -> int:
    """Smallest value >= n on a geometric grid (few distinct shapes, little padding)."""
    v = base
    while v < n:
        v = int(math.ceil(v * ratio / multiple) * multiple)
    return v


@dataclasses.dataclass
class SplitFeatures:
    """Cached upstream features of one split.

    Attributes:
        frames: per utterance, [layers, frames, dim] float16.
        pooled: [utterances, layers, dim] float32, mean over each utterance's frames.
    """

    frames: list[np.ndarray]
    pooled: np.ndarray

    @property
    def num_layers(self) -> int:
        return int(self.pooled.shape[1])

    @property
    def dim(self) -> int:
        return int(self.pooled.shape[2])


def extract(upstream: UpstreamFn, source, *, batch_size: int = 8,
            sample_multiple: int = 3200, log: Callable[[str], None] = print) -> list[np.ndarray]:
    """Runs the upstream over every utterance of a `ShardSource`.

    Utterances are batched by length and padded to a geometric grid of lengths, so that
    the jitted upstream compiles a handful of shapes.

    Returns:
        Per utterance, in source order: [layers, frames, dim] float16.
    """
    n = len(source)
    order = np.argsort(source.num_samples, kind="stable")
    out: list[np.ndarray | None] = [None] * n
    t0 = time.time()
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        wavs = [source[int(i)]["audio"] for i in idx]
        lengths = np.array([len(w) for w in wavs], np.int32)
        if lengths.min() <= 0:
            raise ValueError(f"{source}: empty utterance among records {idx.tolist()}")
        width = bucket(int(lengths.max()), base=sample_multiple * 5, multiple=sample_multiple)
        batch = np.zeros((batch_size, width), np.float32)
        lens = np.full((batch_size,), lengths[0], np.int32)
        for r, w in enumerate(wavs):
            batch[r, :len(w)] = w
            lens[r] = len(w)
        # Rows beyond the split's end repeat the first item, so no row is empty.
        for r in range(len(wavs), batch_size):
            batch[r] = batch[0]
        res = upstream(batch, lens)
        hs = np.stack([np.asarray(h, np.float32) for h in res.hidden_states], axis=1)
        frame_lens = np.asarray(res.lengths)
        for r, i in enumerate(idx):
            out[int(i)] = hs[r, :, :int(frame_lens[r])].astype(np.float16)
    log(f"  extracted {n} utterances of {source.split} in {time.time() - t0:.1f}s")
    return out  # type: ignore[return-value]


def layer_stats(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer, per-dimension mean and std over all frames: two [layers, dim] arrays."""
    total = sum(f.shape[1] for f in frames)
    if total == 0:
        raise ValueError("no frames to compute normalisation statistics from")
    s = sum(f.astype(np.float64).sum(1) for f in frames)
    mean = s / total
    sq = sum(np.square(f.astype(np.float64) - mean[:, None]).sum(1) for f in frames)
    std = np.sqrt(sq / total)
    return mean.astype(np.float32), np.maximum(std, 1e-5).astype(np.float32)


def normalize(frames: Sequence[np.ndarray], mean: np.ndarray, std: np.ndarray) -> SplitFeatures:
    """Standardises cached frames and pools them."""
    normed, pooled = [], []
    for f in frames:
        g = (f.astype(np.float32) - mean[:, None]) / std[:, None]
        normed.append(g.astype(np.float16))
        pooled.append(g.mean(1) if g.shape[1] else np.zeros_like(mean))
    return SplitFeatures(frames=normed, pooled=np.stack(pooled).astype(np.float32))


def frame_batch(frames: Sequence[np.ndarray], stack: int, pad_to: int | None = None,
                batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pads (and stacks `stack` adjacent frames of) utterances into one batch.

    Returns:
        x: [batch, layers, frames, dim * stack] float32 and mask: [batch, frames] bool.
    """
    lens = [-(-f.shape[1] // stack) for f in frames]
    t = max(lens) if pad_to is None else pad_to
    b = len(frames) if batch_size is None else batch_size
    layers, dim = frames[0].shape[0], frames[0].shape[2]
    x = np.zeros((b, layers, t * stack, dim), np.float32)
    mask = np.zeros((b, t), bool)
    for r, (f, n) in enumerate(zip(frames, lens)):
        x[r, :, :f.shape[1]] = f
        mask[r, :n] = True
    x = x.reshape(b, layers, t, stack * dim)
    return x, mask


# --------------------------------------------------------------------------- training

@dataclasses.dataclass
class FitResult:
    params: Any
    best_step: int
    steps: int
    valid: dict[str, float]
    seconds: float


def fit(model: nn.Module, init_args: tuple, loss_fn: Callable, batches: Iterator[dict],
        validate: Callable[[Any], dict[str, float]], task: Task, hp, rng: jax.Array,
        log_scalar: Callable[[str, float, int], None]) -> FitResult:
    """Trains `model` with AdamW; keeps the parameters of the best validation metric.

    Args:
        loss_fn: (params, batch, rng) -> scalar loss.
        batches: infinite iterator of training batches (dicts of numpy arrays).
        validate: params -> metrics dict holding `task.metric`.
        hp: config with `lr`, `weight_decay`, `clip_norm`, `max_steps`, `eval_every`, `patience`.
    """
    t0 = time.time()
    init_rng, rng = jax.random.split(rng)
    params = model.init(init_rng, *init_args)["params"]
    schedule = optax.warmup_constant_schedule(0.0, hp.lr, max(1, hp.max_steps // 20))
    tx = optax.chain(optax.clip_by_global_norm(hp.clip_norm),
                     optax.adamw(schedule, weight_decay=hp.weight_decay))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    sign = 1.0 if task.lower_is_better else -1.0
    best, best_score, best_step, best_valid, stale = params, math.inf, 0, {}, 0
    losses: list[float] = []
    i = 0
    for i in range(1, hp.max_steps + 1):
        params, opt_state, loss = step(params, opt_state, next(batches), jax.random.fold_in(rng, i))
        losses.append(float(loss))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{task.name}: non-finite training loss at step {i}")
        if i % hp.eval_every == 0 or i == hp.max_steps:
            log_scalar(f"{task.name}/train_loss", float(np.mean(losses)), i)
            losses = []
            valid = validate(params)
            for k, v in valid.items():
                log_scalar(f"{task.name}/valid_{k}", v, i)
            score = sign * valid[task.metric]
            if score < best_score:
                best, best_score, best_step, best_valid, stale = params, score, i, valid, 0
            else:
                stale += 1
                if stale >= hp.patience:
                    break
    return FitResult(params=best, best_step=best_step, steps=i, valid=best_valid,
                     seconds=time.time() - t0)


def layer_weights(params: Any) -> np.ndarray:
    """Softmax of the `layer_logits` found in a head's parameters: [layers]."""
    found = []

    def visit(tree):
        if isinstance(tree, dict) or hasattr(tree, "items"):
            for k, v in tree.items():
                if k == "layer_logits":
                    found.append(np.asarray(v))
                else:
                    visit(v)

    visit(params)
    if len(found) != 1:
        raise ValueError(f"expected one layer_logits parameter, found {len(found)}")
    return np.asarray(jax.nn.softmax(jnp.asarray(found[0])))


def _random_batches(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Infinite index batches: shuffled epochs, fixed batch size (with replacement if n is small)."""
    rng = np.random.default_rng(seed)
    while True:
        if n < batch_size:
            yield rng.choice(n, size=batch_size, replace=True)
            continue
        perm = rng.permutation(n)
        for s in range(0, n - batch_size + 1, batch_size):
            yield perm[s:s + batch_size]


def _length_batches(lengths: np.ndarray, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Infinite index batches of similar lengths (little padding), in shuffled order.

    Each epoch sorts the utterances by length with a random tie-breaking jitter, cuts
    consecutive groups of `batch_size` and visits the groups in random order.
    """
    n = len(lengths)
    if n < batch_size:
        yield from _random_batches(n, batch_size, seed)
        return
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, np.float64)
    while True:
        order = np.argsort(lengths * rng.uniform(0.9, 1.1, size=n), kind="stable")
        groups = [order[s:s + batch_size] for s in range(0, n - batch_size + 1, batch_size)]
        for g in rng.permutation(len(groups)):
            yield groups[g]


# --------------------------------------------------------------------------- task families

@dataclasses.dataclass
class TaskData:
    """One role (train / valid / test) of a task: features and targets of its utterances."""

    features: SplitFeatures
    indices: np.ndarray  # utterance indices into the split
    targets: list[Any]
    trials: np.ndarray | None = None  # verification: official [trials, 3] (i, j, target) rows of `indices`


@dataclasses.dataclass
class TaskResult:
    metrics: dict[str, float]
    layer_weights: np.ndarray
    fit: FitResult
    info: dict[str, Any]


def run_classify(task: Task, data: dict[str, TaskData], hp, seed: int,
                 log_scalar: Callable[[str, float, int], None]) -> TaskResult:
    """Mean-pool + linear heads (one per label set); accuracy counts all label sets right."""
    train = data["train"]
    num_sets = len(train.targets[0])
    classes = [sorted({t[k] for t in train.targets}) for k in range(num_sets)]
    lookup = [{c: i for i, c in enumerate(cs)} for cs in classes]

    def encode(targets):  # unseen labels -> -1, always counted wrong
        return np.array([[lookup[k].get(t[k], -1) for k in range(num_sets)] for t in targets], np.int32)

    pooled = {r: d.features.pooled[d.indices] for r, d in data.items()}
    labels = {r: encode(d.targets) for r, d in data.items()}
    model = heads.UtteranceClassifier(train.features.num_layers, tuple(len(c) for c in classes))

    def loss_fn(params, batch, key):
        del key
        logits = model.apply({"params": params}, batch["x"])
        return sum(optax.softmax_cross_entropy_with_integer_labels(lg, batch["y"][:, k]).mean()
                   for k, lg in enumerate(logits))

    predict = jax.jit(lambda p, x: jnp.stack([lg.argmax(-1) for lg in model.apply({"params": p}, x)], -1))

    def score(params, role):
        pred = np.asarray(predict(params, pooled[role]))
        correct = (pred == labels[role]).all(-1)
        return {"acc": float(correct.mean())}

    def batches():
        for idx in _random_batches(len(pooled["train"]), hp.batch_size, seed):
            yield {"x": pooled["train"][idx], "y": labels["train"][idx]}

    res = fit(model, (pooled["train"][:2],), loss_fn, batches(), lambda p: score(p, "valid"),
              task, hp, jax.random.PRNGKey(seed), log_scalar)
    return TaskResult(metrics=score(res.params, "test"), layer_weights=layer_weights(res.params),
                      fit=res, info={"classes": [len(c) for c in classes],
                                     "utterances": {r: len(d.indices) for r, d in data.items()}})


def greedy_ctc(logits: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    """Best-path decoding: argmax, collapse repeats, drop blanks (id 0). logits: [b, t, v]."""
    out = []
    for best, m in zip(np.asarray(logits).argmax(-1), np.asarray(mask)):
        seq, prev = [], 0
        for tok in best[: int(m.sum())]:
            if tok != prev and tok != 0:
                seq.append(int(tok))
            prev = tok
        out.append(seq)
    return out


def _frames_bucket(hp) -> Callable[[int], int]:
    ratio = float(hp.get("bucket_ratio", 1.25))
    return lambda n: bucket(n, ratio=ratio)


def run_ctc(task: Task, data: dict[str, TaskData], hp, seed: int, stack: int,
            log_scalar: Callable[[str, float, int], None]) -> TaskResult:
    """Linear or BiLSTM CTC head over tokens of the training targets (blank = 0)."""
    fbucket = _frames_bucket(hp)
    train = data["train"]
    vocab = sorted({tok for t in train.targets for tok in t})
    ids = {tok: i + 1 for i, tok in enumerate(vocab)}
    layers = train.features.num_layers
    if hp.head == "linear":
        model = heads.LinearCTC(layers, len(vocab) + 1)
    elif hp.head == "bilstm":
        model = heads.BiLSTMCTC(layers, len(vocab) + 1, hidden=hp.hidden, lstm_layers=hp.lstm_layers)
    else:
        raise ValueError(f"{task.name}: unknown CTC head {hp.head!r}; expected 'linear' or 'bilstm'")

    def frames_of(role, rows):
        d = data[role]
        return [d.features.frames[d.indices[r]] for r in rows]

    def loss_fn(params, batch, key):
        del key
        logits = model.apply({"params": params}, batch["x"], batch["mask"])
        per_utt = optax.ctc_loss(logits, 1.0 - batch["mask"], batch["labels"], 1.0 - batch["label_mask"])
        return (per_utt / jnp.maximum(batch["label_mask"].sum(-1), 1.0)).mean()

    apply = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))
    train_lengths = np.array([train.features.frames[i].shape[1] for i in train.indices])
    train_ids = [[ids[t] for t in tgt] for tgt in train.targets]

    def batches():
        for rows in _length_batches(train_lengths, hp.batch_size, seed):
            feats = frames_of("train", rows)
            t = fbucket(max(-(-f.shape[1] // stack) for f in feats))
            x, mask = frame_batch(feats, stack, pad_to=t)
            # Labels padded to half the frame bucket (CTC's cost grows with frames x labels),
            # so the label shape follows the frame shape: one compile per frame bucket.
            n = max(fbucket(max(t // 2, 1)), max(len(train_ids[r]) for r in rows))
            labels = np.zeros((len(rows), n), np.int32)
            label_mask = np.zeros((len(rows), n), np.float32)
            for j, r in enumerate(rows):
                labels[j, :len(train_ids[r])] = train_ids[r]
                label_mask[j, :len(train_ids[r])] = 1.0
            yield {"x": x, "mask": mask.astype(np.float32), "labels": labels, "label_mask": label_mask}

    def decode(params, role) -> list[list[str]]:
        d = data[role]
        lens = np.array([d.features.frames[i].shape[1] for i in d.indices])
        order = np.argsort(lens, kind="stable")
        hyps: list[list[str]] = [[] for _ in order]
        for s in range(0, len(order), hp.eval_batch_size):
            rows = order[s:s + hp.eval_batch_size]
            feats = frames_of(role, rows)
            t = fbucket(max(-(-f.shape[1] // stack) for f in feats))
            x, mask = frame_batch(feats, stack, pad_to=t, batch_size=hp.eval_batch_size)
            logits = np.asarray(apply(params, x, mask.astype(np.float32)))
            for r, seq in zip(rows, greedy_ctc(logits[:len(rows)], mask[:len(rows)])):
                hyps[r] = [vocab[k - 1] for k in seq]
        return hyps

    def score(params, role):
        hyps, refs = decode(params, role), data[role].targets
        if task.metric == "wer":
            words = lambda toks: "".join(" " if c == "|" else c for c in toks).strip()
            return {"wer": metrics.word_error_rate([words(r) for r in refs], [words(h) for h in hyps]),
                    "cer": metrics.error_rate(refs, hyps)}
        return {task.metric: metrics.error_rate(refs, hyps)}

    x0, m0 = frame_batch(frames_of("train", [0]), stack)
    res = fit(model, (x0, m0.astype(np.float32)), loss_fn, batches(), lambda p: score(p, "valid"),
              task, hp, jax.random.PRNGKey(seed), log_scalar)
    return TaskResult(metrics=score(res.params, "test"), layer_weights=layer_weights(res.params),
                      fit=res, info={"vocab": len(vocab), "stack": stack,
                                     "utterances": {r: len(d.indices) for r, d in data.items()}})


def make_trials(speakers: Sequence[str], per_utterance: int, seed: int) -> np.ndarray:
    """Balanced verification trials: for each utterance, up to `per_utterance` same-speaker
    and as many different-speaker partners. Returns [trials, 3] int (i, j, target)."""
    rng = np.random.default_rng(seed)
    speakers = np.asarray(speakers)
    pairs: dict[tuple[int, int], int] = {}
    for i, s in enumerate(speakers):
        same = np.flatnonzero((speakers == s) & (np.arange(len(speakers)) != i))
        diff = np.flatnonzero(speakers != s)
        for pool, label in ((same, 1), (diff, 0)):
            for j in rng.permutation(pool)[:per_utterance]:
                pairs[(min(i, int(j)), max(i, int(j)))] = label
    if not pairs:
        raise ValueError("no verification trials: need at least two utterances")
    return np.array([(i, j, t) for (i, j), t in sorted(pairs.items())], np.int64)


def run_verify(task: Task, data: dict[str, TaskData], hp, seed: int, stack: int,
               log_scalar: Callable[[str, float, int], None]) -> TaskResult:
    """x-vector-like head trained to classify training speakers; cosine-scored trials."""
    fbucket = _frames_bucket(hp)
    train = data["train"]
    speakers = sorted(set(train.targets))
    spk_id = {s: i for i, s in enumerate(speakers)}
    model = heads.XVector(train.features.num_layers, len(speakers), channels=hp.channels,
                          embed_dim=hp.embed_dim)
    labels = np.array([spk_id[s] for s in train.targets], np.int32)

    def frames_of(role, rows):
        d = data[role]
        return [d.features.frames[d.indices[r]] for r in rows]

    def loss_fn(params, batch, key):
        del key
        _, logits = model.apply({"params": params}, batch["x"], batch["mask"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    embed = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m)[0])
    train_lengths = np.array([train.features.frames[i].shape[1] for i in train.indices])

    def batches():
        for rows in _length_batches(train_lengths, hp.batch_size, seed):
            feats = frames_of("train", rows)
            x, mask = frame_batch(feats, stack, pad_to=fbucket(max(-(-f.shape[1] // stack) for f in feats)))
            yield {"x": x, "mask": mask.astype(np.float32), "y": labels[rows]}

    # Evaluation pools: frames and speakers per role. When the valid split holds no two
    # utterances of one speaker, its trials pair valid utterances with training ones.
    pools = {}
    for role in ("valid", "test"):
        d = data[role]
        frames = [d.features.frames[i] for i in d.indices]
        spk = list(d.targets)
        if role == "valid" and d.trials is None and len(set(spk)) == len(spk):
            taken: dict[str, int] = {}
            extra = []
            for r, s in enumerate(train.targets):
                if s in set(spk) and taken.get(s, 0) < 2:
                    taken[s] = taken.get(s, 0) + 1
                    extra.append(r)
            frames += frames_of("train", extra)
            spk += [train.targets[r] for r in extra]
        trials = d.trials if d.trials is not None else make_trials(spk, hp.trials_per_utterance, seed)
        pools[role] = (frames, trials)

    def score(params, role):
        frames, tr = pools[role]
        order = np.argsort([f.shape[1] for f in frames], kind="stable")
        emb = np.zeros((len(order), hp.embed_dim), np.float32)
        for s in range(0, len(order), hp.eval_batch_size):
            rows = order[s:s + hp.eval_batch_size]
            feats = [frames[r] for r in rows]
            x, mask = frame_batch(feats, stack, pad_to=fbucket(max(-(-f.shape[1] // stack) for f in feats)),
                                  batch_size=hp.eval_batch_size)
            emb[rows] = np.asarray(embed(params, x, mask.astype(np.float32)))[:len(rows)]
        emb /= np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-8)
        cos = (emb[tr[:, 0]] * emb[tr[:, 1]]).sum(-1)
        return {"eer": metrics.equal_error_rate(cos, tr[:, 2])}

    x0, m0 = frame_batch(frames_of("train", [0]), stack)
    res = fit(model, (x0, m0.astype(np.float32)), loss_fn, batches(), lambda p: score(p, "valid"),
              task, hp, jax.random.PRNGKey(seed), log_scalar)
    return TaskResult(metrics=score(res.params, "test"), layer_weights=layer_weights(res.params),
                      fit=res, info={"train_speakers": len(speakers),
                                     "test_speakers": len(set(data["test"].targets)),
                                     "trials": {r: int(len(p[1])) for r, p in pools.items()},
                                     "utterances": {r: len(d.indices) for r, d in data.items()}})
