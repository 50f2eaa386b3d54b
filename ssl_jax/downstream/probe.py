"""Frozen-upstream probing: weighted-sum heads trained on stored features, early-stopped.

Every hidden state of the upstream is extracted once per split into an on-disk
`store.FeatureStore`. A task reads its utterances from the store, standardised per layer and
dimension with statistics of the task's own training utterances (the same rule for every
upstream). Heads train with AdamW in one jitted step per batch shape; the validation metric
picks the best parameters (early stopping), and the test split is scored once with them
(SUPERB protocol, Yang et al., 2021). Every test metric comes with its per-unit statistics
(`stats`), from which the evaluator draws bootstrap intervals and paired comparisons.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.downstream import heads, metrics, stats
from ssl_jax.downstream.store import FeatureStore
from ssl_jax.downstream.tasks import Task


# --------------------------------------------------------------------------- features

def bucket(n: int, base: int = 32, ratio: float = 1.25, multiple: int = 16) -> int:
    """Smallest value >= n on a geometric grid (few distinct shapes, little padding)."""
    v = base
    while v < n:
        v = int(math.ceil(v * ratio / multiple) * multiple)
    return v


@dataclasses.dataclass
class TaskData:
    """One role (train / valid / test) of a task: its utterances in a feature store, standardised.

    Attributes:
        store: the split's features.
        indices: [utterances] rows of the store that belong to the task.
        targets: per utterance, what the task predicts.
        mean, std: [layers, dim] standardisation (the task's training statistics) of `layers`.
        layer: None for every layer, else the one layer the probe reads.
        trials: verification: official [trials, 3] (i, j, target) rows of `indices`, or None.
    """

    store: FeatureStore
    indices: np.ndarray
    targets: list[Any]
    mean: np.ndarray
    std: np.ndarray
    layer: int | None = None
    trials: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def num_layers(self) -> int:
        return 1 if self.layer is not None else self.store.num_layers

    @property
    def lengths(self) -> np.ndarray:
        """[utterances] frames per utterance."""
        return self.store.lengths[self.indices]

    def frames(self, row: int) -> np.ndarray:
        """Standardised float32 [layers, frames, dim] of utterance `row` of this role."""
        f = self.store.frames(int(self.indices[row]), self.layer).astype(np.float32)
        return (f - self.mean[:, None]) / self.std[:, None]

    def pooled(self) -> np.ndarray:
        """Standardised mean over frames, float32 [utterances, layers, dim]."""
        p = self.store.pooled[self.indices]
        if self.layer is not None:
            p = p[:, self.layer:self.layer + 1]
        return ((p - self.mean) / self.std).astype(np.float32)


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
    """Outcome of `fit`: the best parameters and the validation curve that chose them.

    Attributes:
        curve: one row per validation, {"step", "train_loss", "valid": {metric: value}}.
        lr: the learning rate of the chosen fit.
        grid: with a learning-rate grid, {lr: best validation metrics} of every fit tried.
    """

    params: Any
    best_step: int
    steps: int
    valid: dict[str, float]
    seconds: float
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lr: float = 0.0
    grid: dict[float, dict[str, float]] = dataclasses.field(default_factory=dict)


def fit(model: nn.Module, init_args: tuple, loss_fn: Callable, batches: Callable[[], Iterator[dict]],
        validate: Callable[[Any], dict[str, float]], task: Task, hp, rng: jax.Array,
        log_scalar: Callable[[str, float, int], None]) -> FitResult:
    """Trains `model` with AdamW; keeps the parameters of the best validation metric.

    Args:
        loss_fn: (params, batch, rng) -> scalar loss.
        batches: () -> infinite iterator of training batches (dicts of numpy arrays); called
            once per fit, so every fit sees the same data order.
        validate: params -> metrics dict holding `task.metric` (or `hp.select_metric`, the
            validation metric that picks the parameters, when set).
        hp: config with `lr`, `weight_decay`, `clip_norm`, `max_steps`, `eval_every`, `patience`;
            optionally `min_steps`: early stopping waits until then, because a CTC head
            sits on a plateau (blanks only) for a while before it learns, and an upstream
            whose layers are a linear map of another's can take longer to leave it; and
            optionally `lrs`, a learning-rate grid: one fit per rate from the same initial
            parameters and data order, the best validation metric choosing among them (as
            SUPERB searches the learning rate per upstream and task), instead of `lr`.
    """
    t0 = time.time()
    select = hp.get("select_metric", "") or task.metric
    sign = 1.0 if task.lower_is_better_for(select) else -1.0
    lrs = tuple(float(lr) for lr in (hp.get("lrs", ()) or ())) or (float(hp.lr),)
    chosen, grid = None, {}
    for lr in lrs:
        scalar = log_scalar if len(lrs) == 1 else (
            lambda tag, value, step, lr=lr: log_scalar(f"{tag}@lr{lr:g}", value, step))
        res = _fit_one(model, init_args, loss_fn, batches(), validate, task, hp, lr, rng, scalar, select, sign)
        grid[lr] = res.valid
        if chosen is None or sign * res.valid[select] < sign * chosen.valid[select]:
            chosen = res
    chosen.grid = grid if len(lrs) > 1 else {}
    chosen.seconds = time.time() - t0
    return chosen


def _fit_one(model, init_args, loss_fn, batches, validate, task, hp, lr: float, rng, log_scalar,
             select: str, sign: float) -> FitResult:
    """One fit of `fit` at learning rate `lr`."""
    t0 = time.time()
    init_rng, rng = jax.random.split(rng)
    params = model.init(init_rng, *init_args)["params"]
    schedule = optax.warmup_constant_schedule(0.0, lr, max(1, hp.max_steps // 20))
    tx = optax.chain(optax.clip_by_global_norm(hp.clip_norm),
                     optax.adamw(schedule, weight_decay=hp.weight_decay))
    min_steps = int(hp.get("min_steps", 0))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    best, best_score, best_step, best_valid, stale = params, math.inf, 0, {}, 0
    losses: list[float] = []
    curve: list[dict[str, Any]] = []
    i = 0
    for i in range(1, hp.max_steps + 1):
        params, opt_state, loss = step(params, opt_state, next(batches), jax.random.fold_in(rng, i))
        losses.append(float(loss))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{task.name}: non-finite training loss at step {i} (lr {lr:g})")
        if i % hp.eval_every == 0 or i == hp.max_steps:
            train_loss = float(np.mean(losses))
            log_scalar(f"{task.name}/train_loss", train_loss, i)
            losses = []
            valid = validate(params)
            for k, v in valid.items():
                log_scalar(f"{task.name}/valid_{k}", v, i)
            curve.append({"step": i, "train_loss": round(train_loss, 5),
                          "valid": {k: round(float(v), 5) for k, v in valid.items()}})
            score = sign * valid[select]
            if score < best_score:
                best, best_score, best_step, best_valid, stale = params, score, i, valid, 0
            else:
                stale += 1
                if stale >= hp.patience and i >= min_steps:
                    break
    return FitResult(params=best, best_step=best_step, steps=i, valid=best_valid,
                     seconds=time.time() - t0, curve=curve, lr=lr)


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


def _random_batches(n: int, batch_size: int, seed: int, weights: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Infinite index batches: shuffled epochs, fixed batch size (with replacement if n is small).

    With `weights` ([n], e.g. inverse class frequencies), batches are drawn with replacement
    in proportion to them (class-balanced training, as SUPERB's keyword spotting).
    """
    rng = np.random.default_rng(seed)
    while True:
        if weights is not None:
            yield rng.choice(n, size=batch_size, replace=True, p=weights / weights.sum())
            continue
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
class TaskResult:
    """A probed task.

    Attributes:
        metrics: test metrics {name: value}.
        units: per test metric, its per-unit statistics (bootstrap intervals, comparisons).
        layer_weights: [layers] learned softmax weights.
    """

    metrics: dict[str, float]
    units: dict[str, stats.Metric]
    layer_weights: np.ndarray
    fit: FitResult
    info: dict[str, Any]


def run_classify(task: Task, data: dict[str, TaskData], hp, seed: int,
                 log_scalar: Callable[[str, float, int], None]) -> TaskResult:
    """Mean-pool + linear heads (one per label set); `acc` counts all label sets right.

    Tasks with several label sets (intent slots) also report `acc_<slot>` per set.
    """
    train = data["train"]
    num_sets = len(train.targets[0])
    classes = [sorted({t[k] for t in train.targets}) for k in range(num_sets)]
    lookup = [{c: i for i, c in enumerate(cs)} for cs in classes]
    slots = task.slots or tuple(str(k) for k in range(num_sets))

    def encode(targets):  # unseen labels -> -1, always counted wrong
        return np.array([[lookup[k].get(t[k], -1) for k in range(num_sets)] for t in targets], np.int32)

    pooled = {r: d.pooled() for r, d in data.items()}
    labels = {r: encode(d.targets) for r, d in data.items()}
    model = heads.UtteranceClassifier(train.num_layers, tuple(len(c) for c in classes))

    def loss_fn(params, batch, key):
        del key
        logits = model.apply({"params": params}, batch["x"])
        return sum(optax.softmax_cross_entropy_with_integer_labels(lg, batch["y"][:, k]).mean()
                   for k, lg in enumerate(logits))

    predict = jax.jit(lambda p, x: jnp.stack([lg.argmax(-1) for lg in model.apply({"params": p}, x)], -1))

    def correct(params, role) -> np.ndarray:
        return np.asarray(predict(params, pooled[role])) == labels[role]  # [utterances, sets]

    def units(params, role) -> dict[str, stats.Metric]:
        ok = correct(params, role).astype(np.float64)
        out: dict[str, stats.Metric] = {"acc": stats.Mean(ok.all(-1).astype(np.float64))}
        if num_sets > 1:
            out.update({f"acc_{slot}": stats.Mean(ok[:, k]) for k, slot in enumerate(slots)})
        return out

    weights = None
    if hp.get("balanced", False):  # inverse frequency of the first label set's classes
        counts = np.bincount(labels["train"][:, 0], minlength=len(classes[0]))
        weights = 1.0 / counts[labels["train"][:, 0]]

    def batches():
        for idx in _random_batches(len(pooled["train"]), hp.batch_size, seed, weights):
            yield {"x": pooled["train"][idx], "y": labels["train"][idx]}

    def validate(params):
        return {"acc": float(correct(params, "valid").all(-1).mean())}

    res = fit(model, (pooled["train"][:2],), loss_fn, batches, validate,
              task, hp, jax.random.PRNGKey(seed), log_scalar)
    test_units = units(res.params, "test")
    return TaskResult(metrics={k: stats.point(m) for k, m in test_units.items()}, units=test_units,
                      layer_weights=layer_weights(res.params), fit=res,
                      info={"classes": [len(c) for c in classes],
                            "utterances": {r: len(d) for r, d in data.items()}})


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


def error_units(refs: Sequence[Sequence[Any]], hyps: Sequence[Sequence[Any]]) -> stats.Ratio:
    """Per-utterance edit distances over reference lengths (corpus-level error rate as a ratio)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    num = np.array([metrics.edit_distance(r, h) for r, h in zip(refs, hyps)], np.float64)
    den = np.array([len(r) for r in refs], np.float64)
    if den.sum() == 0:
        raise ValueError("references hold no tokens; the error rate is undefined")
    return stats.Ratio(num, den)


def ctc_units(task: Task, refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> dict[str, stats.Ratio]:
    """Test units of a CTC task's token sequences: {"wer", "cer"} for ASR (words are split at
    the word-boundary token "|"), {task.metric} otherwise (PER)."""
    if task.metric == "wer":
        words = lambda toks: "".join(" " if c == "|" else c for c in toks).split()  # noqa: E731
        return {"wer": error_units([words(r) for r in refs], [words(h) for h in hyps]),
                "cer": error_units(refs, hyps)}
    return {task.metric: error_units(refs, hyps)}


def run_ctc(task: Task, data: dict[str, TaskData], hp, seed: int, stack: int,
            log_scalar: Callable[[str, float, int], None]) -> TaskResult:
    """Linear or BiLSTM CTC head over tokens of the training targets (blank = 0)."""
    fbucket = _frames_bucket(hp)
    train = data["train"]
    vocab = sorted({tok for t in train.targets for tok in t})
    ids = {tok: i + 1 for i, tok in enumerate(vocab)}
    if hp.head == "linear":
        model = heads.LinearCTC(train.num_layers, len(vocab) + 1)
    elif hp.head == "bilstm":
        model = heads.BiLSTMCTC(train.num_layers, len(vocab) + 1, hidden=hp.hidden, lstm_layers=hp.lstm_layers)
    else:
        raise ValueError(f"{task.name}: unknown CTC head {hp.head!r}; expected 'linear' or 'bilstm'")

    def loss_fn(params, batch, key):
        del key
        logits = model.apply({"params": params}, batch["x"], batch["mask"])
        per_utt = optax.ctc_loss(logits, 1.0 - batch["mask"], batch["labels"], 1.0 - batch["label_mask"])
        return (per_utt / jnp.maximum(batch["label_mask"].sum(-1), 1.0)).mean()

    apply = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))
    train_ids = [[ids[t] for t in tgt] for tgt in train.targets]

    def batches():
        for rows in _length_batches(train.lengths, hp.batch_size, seed):
            feats = [train.frames(r) for r in rows]
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
        order = np.argsort(d.lengths, kind="stable")
        hyps: list[list[str]] = [[] for _ in order]
        for s in range(0, len(order), hp.eval_batch_size):
            rows = order[s:s + hp.eval_batch_size]
            feats = [d.frames(r) for r in rows]
            t = fbucket(max(-(-f.shape[1] // stack) for f in feats))
            x, mask = frame_batch(feats, stack, pad_to=t, batch_size=hp.eval_batch_size)
            logits = np.asarray(apply(params, x, mask.astype(np.float32)))
            for r, seq in zip(rows, greedy_ctc(logits[:len(rows)], mask[:len(rows)])):
                hyps[r] = [vocab[k - 1] for k in seq]
        return hyps

    def units(params, role) -> dict[str, stats.Metric]:
        return ctc_units(task, data[role].targets, decode(params, role))

    def validate(params):
        return {k: stats.point(m) for k, m in units(params, "valid").items()}

    x0, m0 = frame_batch([train.frames(0)], stack)
    res = fit(model, (x0, m0.astype(np.float32)), loss_fn, batches, validate,
              task, hp, jax.random.PRNGKey(seed), log_scalar)
    test_units = units(res.params, "test")
    return TaskResult(metrics={k: stats.point(m) for k, m in test_units.items()}, units=test_units,
                      layer_weights=layer_weights(res.params), fit=res,
                      info={"vocab": len(vocab), "stack": stack,
                            "utterances": {r: len(d) for r, d in data.items()}})


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
    """x-vector-like head trained to classify training speakers; cosine-scored trials.

    The test EER's units are the test utterances: a bootstrap resamples utterances and
    weighs each trial by the product of its two utterances' multiplicities.
    """
    fbucket = _frames_bucket(hp)
    train = data["train"]
    speakers = sorted(set(train.targets))
    spk_id = {s: i for i, s in enumerate(speakers)}
    model = heads.XVector(train.num_layers, len(speakers), channels=hp.channels, embed_dim=hp.embed_dim)
    labels = np.array([spk_id[s] for s in train.targets], np.int32)

    def loss_fn(params, batch, key):
        del key
        _, logits = model.apply({"params": params}, batch["x"], batch["mask"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    embed = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m)[0])

    def batches():
        for rows in _length_batches(train.lengths, hp.batch_size, seed):
            feats = [train.frames(r) for r in rows]
            x, mask = frame_batch(feats, stack, pad_to=fbucket(max(-(-f.shape[1] // stack) for f in feats)))
            yield {"x": x, "mask": mask.astype(np.float32), "y": labels[rows]}

    # Evaluation pools: (role, row) pairs and speakers per role. When the valid split holds
    # no two utterances of one speaker, its trials pair valid utterances with training ones.
    pools = {}
    for role in ("valid", "test"):
        d = data[role]
        members = [(role, r) for r in range(len(d))]
        spk = list(d.targets)
        if role == "valid" and d.trials is None and len(set(spk)) == len(spk):
            taken: dict[str, int] = {}
            for r, s in enumerate(train.targets):
                if s in set(spk) and taken.get(s, 0) < 2:
                    taken[s] = taken.get(s, 0) + 1
                    members.append(("train", r))
                    spk.append(s)
        trials = d.trials if d.trials is not None else make_trials(spk, hp.trials_per_utterance, seed)
        pools[role] = (members, trials)

    def scored(params, role) -> stats.Eer:
        members, tr = pools[role]
        lens = [int(data[ro].lengths[r]) for ro, r in members]
        order = np.argsort(lens, kind="stable")
        emb = np.zeros((len(order), hp.embed_dim), np.float32)
        for s in range(0, len(order), hp.eval_batch_size):
            rows = order[s:s + hp.eval_batch_size]
            feats = [data[members[k][0]].frames(members[k][1]) for k in rows]
            x, mask = frame_batch(feats, stack, pad_to=fbucket(max(-(-f.shape[1] // stack) for f in feats)),
                                  batch_size=hp.eval_batch_size)
            emb[rows] = np.asarray(embed(params, x, mask.astype(np.float32)))[:len(rows)]
        emb /= np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-8)
        cos = (emb[tr[:, 0]] * emb[tr[:, 1]]).sum(-1)
        return stats.Eer(trials=tr, scores=cos.astype(np.float64), units=len(members))

    x0, m0 = frame_batch([train.frames(0)], stack)
    res = fit(model, (x0, m0.astype(np.float32)), loss_fn, batches,
              lambda p: {"eer": stats.point(scored(p, "valid"))},
              task, hp, jax.random.PRNGKey(seed), log_scalar)
    test_units = {"eer": scored(res.params, "test")}
    return TaskResult(metrics={k: stats.point(m) for k, m in test_units.items()}, units=test_units,
                      layer_weights=layer_weights(res.params), fit=res,
                      info={"train_speakers": len(speakers),
                            "test_speakers": len(set(data["test"].targets)),
                            "trials": {r: int(len(p[1])) for r, p in pools.items()},
                            "utterances": {r: len(d) for r, d in data.items()}})
