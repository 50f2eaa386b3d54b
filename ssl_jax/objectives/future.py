"""Predicting encoder frames k = 1..K steps ahead against distractors from the same utterance:
what CPC (van den Oord et al., 2018; Rivière et al., 2020), wav2vec (Schneider et al., 2019)
and vq-wav2vec (Baevski et al., 2020) share.

A causal context network reads the encoder frames z_1..z_T and gives c_1..c_T; a step-specific
map h_k turns c_t into a prediction of z_{t+k}. Each target frame s gets N distractors drawn
uniformly (with replacement) from the valid frames of its own utterance other than s, shared
by the K predictions of s (as fairseq's wav2vec draws them per target frame). The scores are
dot products h_k(c_{s-k}) . z for the positive z_s and its distractors; CPC reads them with
InfoNCE (softmax cross-entropy), wav2vec with independent binary (logistic) losses. Scores are
indexed by target frame s, so the gathered distractor vectors ([batch, frames, N, dim]) serve
all K steps. A (s, k) pair counts when s is a valid frame and s - k >= 0: every prediction
stays inside its utterance.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import frame_encoder
from ssl_jax.models.encoder import config_from
from ssl_jax.objectives import Objective, accuracy_floor, masking

NEGATIVE_INDICES = "negative_indices"  # batch key: int[batch, frames, N] fixed distractors (tests)


def sample_negatives(key: jax.Array, frame_mask: jax.Array, num_negatives: int) -> jax.Array:
    """Distractor frames for every target frame, from the valid frames of its own utterance.

    Args:
      key: PRNG key.
      frame_mask: bool[batch, frames] valid frames (a prefix).
      num_negatives: N.
    Returns:
      int32[batch, frames, N]: for each valid target frame s of an utterance with at least two
      valid frames, N indices drawn uniformly with replacement from its valid frames other than
      s. Rows of padding frames hold arbitrary in-range indices (their pairs never count).
    """
    idx, _ = masking.sample_negatives(key, frame_mask, num_negatives)
    return idx


def align_to_targets(pred: jax.Array) -> jax.Array:
    """Re-indexes per-step predictions by the frame they predict.

    Args:
      pred: [batch, frames, K, dim], pred[b, t, k-1] = h_k(c_t), the prediction of z_{t+k}.
    Returns:
      [batch, frames, K, dim], out[b, s, k-1] = pred[b, s-k, k-1] (zeros where s < k).
    """
    t, steps = pred.shape[1], pred.shape[2]
    cols = []
    for k in range(1, steps + 1):
        shifted = pred[:, : max(t - k, 0), k - 1]
        cols.append(jnp.pad(shifted, ((0, 0), (t - shifted.shape[1], 0), (0, 0))))
    return jnp.stack(cols, axis=2)


def pair_mask(frame_mask: jax.Array, steps: int) -> jax.Array:
    """bool[batch, frames, K]: (s, k) counts when s is valid and s - k >= 0 (frame_mask: bool[batch, frames], a prefix)."""
    s = jnp.arange(frame_mask.shape[1])[:, None]
    k = jnp.arange(1, steps + 1)[None, :]
    return frame_mask[:, :, None] & (s >= k)[None]


def step_scores(pred: jax.Array, z: jax.Array, neg_idx: jax.Array) -> jax.Array:
    """Dot-product scores of the positive (column 0) and the distractors for every step.

    Args:
      pred: [batch, frames, K, dim] per-step predictions indexed by context frame t
        (pred[b, t, k-1] predicts z[b, t+k]).
      z: [batch, frames, dim] encoder frames (the targets).
      neg_idx: int[batch, frames, N] distractor frames of each target frame, into the same utterance.
    Returns:
      f32[batch, frames, K, 1 + N] indexed by target frame s: [..., 0] = pred[b, s-k, k-1] . z[b, s],
      [..., 1 + n] = pred[b, s-k, k-1] . z[b, neg_idx[b, s, n]]; meaningless where `pair_mask` is False.
    """
    if pred.ndim != 4 or z.ndim != 3 or neg_idx.ndim != 3:
        raise ValueError(f"want pred [batch, frames, K, dim], z [batch, frames, dim], neg_idx [batch, frames, N]; "
                         f"got {pred.shape}, {z.shape}, {neg_idx.shape}")
    if pred.shape[:2] != z.shape[:2] or neg_idx.shape[:2] != z.shape[:2] or pred.shape[-1] != z.shape[-1]:
        raise ValueError(f"shapes disagree: pred {pred.shape}, z {z.shape}, neg_idx {neg_idx.shape}")
    q = align_to_targets(pred.astype(jnp.float32))
    z = z.astype(jnp.float32)
    pos = jnp.einsum("bskd,bsd->bsk", q, z)
    negatives = jax.vmap(lambda zb, ib: zb[ib])(z, neg_idx.astype(jnp.int32))  # [batch, frames, N, dim]
    neg = jnp.einsum("bskd,bsnd->bskn", q, negatives)
    return jnp.concatenate([pos[..., None], neg], axis=-1)


def _ranked_first(scores: jax.Array) -> jax.Array:
    return scores[..., 0] > jnp.max(scores[..., 1:], axis=-1)


def infonce(scores: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """InfoNCE: -log softmax of the positive among 1 + N, averaged over the valid pairs.

    Args:
      scores: f32[batch, frames, K, 1 + N] (`step_scores`); valid: bool[batch, frames, K] (`pair_mask`).
    Returns:
      (loss, accuracy = share of valid pairs whose positive scores strictly above every
      distractor, number of valid pairs).
    """
    w = valid.astype(jnp.float32)
    pairs = w.sum()
    denom = jnp.maximum(pairs, 1.0)
    ce = jax.nn.logsumexp(scores, axis=-1) - scores[..., 0]
    return (ce * w).sum() / denom, (_ranked_first(scores) * w).sum() / denom, pairs


def binary_contrastive(scores: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """wav2vec's loss: -log sigmoid(positive) - sum_n log sigmoid(-distractor_n), averaged over the valid pairs.

    Each distractor weighs 1 (the paper's lambda times an expectation over N samples, lambda = N;
    fairseq's default without `balanced_classes`).

    Args:
      scores: f32[batch, frames, K, 1 + N]; valid: bool[batch, frames, K].
    Returns:
      (loss, accuracy as `infonce`'s, number of valid pairs).
    """
    w = valid.astype(jnp.float32)
    pairs = w.sum()
    denom = jnp.maximum(pairs, 1.0)
    per_pair = jax.nn.softplus(-scores[..., 0]) + jax.nn.softplus(scores[..., 1:]).sum(-1)
    return (per_pair * w).sum() / denom, (_ranked_first(scores) * w).sum() / denom, pairs


class StepPredictor(nn.Module):
    """K step-specific affine maps h_k(c) = W_k c (+ b_k) as one matmul.

    W_k starts at zero, so every score starts at 0 and the loss at its chance value (log(1 + N)
    for InfoNCE, (1 + N) log 2 for the binary loss) instead of at the scale of random dot
    products of wide frames (a 256-d log-mel projection gives scores of about +-16, binary
    losses near 200, and early updates that only shrink them); the encoder learns from the
    first update of W_k on.

    Attributes:
      steps: K.
      features: width of a prediction (the encoder frames' width).
      use_bias: add b_k (wav2vec) or not (CPC's log-bilinear score z^T W_k c).
    """

    steps: int
    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, c: jax.Array) -> jax.Array:
        """c: [batch, frames, hidden] -> [batch, frames, K, features]."""
        out = nn.Dense(
            self.steps * self.features, use_bias=self.use_bias,
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), name="steps")(c)
        return out.reshape(*c.shape[:-1], self.steps, self.features)


def causal_encoder_config(model: Any, objective: str) -> frame_encoder.Config:
    """The frame-encoder config of `model`, checked to have a causal body (an error naming the fields otherwise)."""
    cfg = config_from(model)
    if not isinstance(cfg, frame_encoder.Config):
        raise ValueError(f"{objective} trains the frame encoder: set model.architecture='frames'")
    if cfg.body not in ("rnn", "conv") or (cfg.body == "rnn" and cfg.bidirectional) or (
            cfg.body == "conv" and not cfg.causal):
        raise ValueError(f"{objective} predicts the future, so its context network must be causal: model.body "
                         f"'rnn' with bidirectional=False or 'conv' with causal=True (got body={cfg.body!r}, "
                         f"bidirectional={cfg.bidirectional}, causal={cfg.causal})")
    return cfg


class FuturePredictionObjective(Objective):
    """Encoder frames z = hidden state 0, context c = the last hidden state, K step predictors
    and a score loss; CPC and wav2vec set the class attributes.

    Params: `{"encoder", "predictor"}`. Batch: `audio` f32[batch, samples], `audio_mask`
    bool[batch, samples]; optional `negative_indices` int[batch, frames, N] fixes the distractors.

    Attributes:
      NAME: the registry name, for error messages.
      SCORE_LOSS: `infonce` or `binary_contrastive`.
      PREDICTOR_BIAS: whether h_k has a bias.
    """

    NAME: str = ""
    SCORE_LOSS: Callable = staticmethod(infonce)
    PREDICTOR_BIAS: bool = True
    SUMMARY = {"accuracy": "future-frame accuracy"}

    def __init__(self, config: Any):
        self.config = config
        self.encoder_config = causal_encoder_config(config["model"], self.NAME)
        o = config["objective"]
        self.steps = int(o["prediction_steps"])
        self.num_negatives = int(o["num_negatives"])
        if self.steps < 1 or self.num_negatives < 1:
            raise ValueError(f"objective.prediction_steps and objective.num_negatives must be >= 1, got "
                             f"{self.steps} and {self.num_negatives}")
        self.encoder = frame_encoder.Encoder(self.encoder_config)
        self.predictor = StepPredictor(self.steps, self.encoder_config.hidden_size, self.PREDICTOR_BIAS)
        self.floors = accuracy_floor(1.0 / (1 + self.num_negatives))

    def init(self, rng: jax.Array, batch: dict) -> Any:
        """Boxed parameters for a batch of this shape."""
        k_enc, k_pred, k_gumbel = jax.random.split(rng, 3)
        enc = self.encoder.init({"params": k_enc, "gumbel": k_gumbel}, batch["audio"], batch["audio_mask"])["params"]
        c = jnp.zeros((1, 1, self.encoder_config.hidden_size), jnp.float32)
        return {"encoder": enc, "predictor": self.predictor.init(k_pred, c)["params"]}

    def vq_temperature(self, step: Any) -> jax.Array:
        """Gumbel temperature at `step` (only read when the encoder quantises)."""
        del step
        return jnp.ones((), jnp.float32)

    def encode(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool) -> tuple[Any, dict]:
        """(EncoderOutput, the sown `intermediates` collection) of the batch's audio."""
        k_drop, k_gumbel = jax.random.split(rng)
        return self.encoder.apply(
            {"params": params["encoder"]}, batch["audio"], batch["audio_mask"], deterministic=not train,
            vq_temperature=self.vq_temperature(step), method=_encode,
            rngs={"dropout": k_drop, "gumbel": k_gumbel} if train else {}, mutable=[frame_encoder.VQ_COLLECTION])

    def scores(self, params: Any, out: Any, neg_idx: jax.Array) -> jax.Array:
        """f32[batch, frames, K, 1 + N] (`step_scores`) of an encoder output and distractors int[batch, frames, N]."""
        pred = self.predictor.apply({"params": params["predictor"]}, out.last_hidden_state)
        return step_scores(pred, out.hidden_states[0], neg_idx)

    def loss(self, params: Any, batch: dict, rng: jax.Array, step: Any, train: bool = True, state: Any = None):
        """(loss, metrics: accuracy, masked_frames = valid (s, k) pairs, and the subclass's `extra_metrics`)."""
        del state
        k_enc, k_neg = jax.random.split(rng)
        out, sown = self.encode(params, batch, k_enc, step, train)
        if NEGATIVE_INDICES in batch:
            neg_idx = jnp.asarray(batch[NEGATIVE_INDICES], jnp.int32)
        else:
            neg_idx = sample_negatives(k_neg, out.frame_mask, self.num_negatives)
        scores = self.scores(params, out, neg_idx)
        loss, accuracy, pairs = self.SCORE_LOSS(scores, pair_mask(out.frame_mask, self.steps))
        return loss, {"accuracy": accuracy, "masked_frames": pairs, **self.extra_metrics(sown, step)}

    def extra_metrics(self, sown: dict, step: Any) -> dict:
        """Metrics beyond accuracy (vq-wav2vec: perplexity, temperature)."""
        del sown, step
        return {}


def _encode(encoder: frame_encoder.Encoder, wavs: jax.Array, audio_mask: jax.Array, *, deterministic: bool,
            vq_temperature: jax.Array) -> Any:
    """`Encoder.__call__` with a Gumbel temperature (what `apply(method=...)` runs)."""
    x, frame_mask, penalty = encoder.features(wavs, audio_mask)
    return encoder.body(x, frame_mask, deterministic=deterministic, vq_temperature=vq_temperature,
                        feature_penalty=penalty)
