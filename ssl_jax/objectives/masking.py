"""Span masking of frames (wav2vec 2.0, Baevski et al. 2020, Sec. 3.1; fairseq `compute_mask_indices`).

Each utterance of L valid frames gets floor(mask_prob * L / mask_length + u), u ~ U[0, 1),
span starts (at least `min_masks`), drawn without replacement among the valid starts; every
start masks `mask_length` consecutive frames, and spans may overlap. Padding frames are
never masked. Everything is jax.random, so a step key fixes the mask inside a jitted step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def span_mask(
    key: jax.Array,
    frame_lengths: jax.Array,
    num_frames: int,
    *,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
) -> jax.Array:
    """Samples span masks.

    Args:
        key: PRNG key.
        frame_lengths: int[batch] valid frames per utterance.
        num_frames: padded number of frames T.
        mask_prob: expected fraction of valid frames that start a span, times mask_length
            (fairseq's `mask_prob`; 0.65 with mask_length 10 masks about half the frames).
        mask_length: span length M.
        min_masks: minimum number of spans per utterance (fewer only when it does not fit).
    Returns:
        bool[batch, frames], True = masked.
    """
    lengths = jnp.asarray(frame_lengths, jnp.int32)
    starts = span_starts(key, lengths, num_frames, mask_prob=mask_prob, mask_length=mask_length, min_masks=min_masks)
    t = jnp.arange(num_frames)
    # Frame t is masked if a span starts in (t - mask_length, t].
    c = jnp.cumsum(starts.astype(jnp.int32), axis=-1)
    shifted = jnp.pad(c, ((0, 0), (mask_length, 0)))[:, :num_frames]
    mask = (c - shifted) > 0
    return mask & (t[None, :] < lengths[:, None])


def span_starts(
    key: jax.Array,
    frame_lengths: jax.Array,
    num_frames: int,
    *,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
) -> jax.Array:
    """The span starts `span_mask` draws (same arguments and key give the same spans).

    Returns:
        bool[batch, frames], True where a span of `mask_length` frames starts: always a valid
        frame, and the span ends within the valid frames unless the utterance is shorter than
        `mask_length` (then one span starts at its first frame).
    """
    lengths = jnp.asarray(frame_lengths, jnp.int32)
    batch = lengths.shape[0]
    k_count, k_start = jax.random.split(key)
    u = jax.random.uniform(k_count, (batch,))
    num_spans = jnp.floor(mask_prob * lengths / mask_length + u).astype(jnp.int32)
    num_spans = jnp.maximum(num_spans, min_masks)
    num_starts = jnp.maximum(lengths - mask_length + 1, 1)
    # At most as many spans as fit end to end, and never more than there are start positions.
    num_spans = jnp.minimum(num_spans, jnp.minimum(jnp.maximum(lengths // mask_length, 1), num_starts))
    num_spans = jnp.where(lengths > 0, num_spans, 0)

    t = jnp.arange(num_frames)
    noise = jax.random.uniform(k_start, (batch, num_frames))
    noise = jnp.where(t[None, :] < num_starts[:, None], noise, 2.0)
    rank = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
    return rank < num_spans[:, None]


def sample_negatives(key: jax.Array, mask: jax.Array, num_negatives: int) -> tuple[jax.Array, jax.Array]:
    """Samples distractor frames from the masked frames of the same utterance.

    For each frame t, K indices are drawn uniformly from the masked frames of its own
    utterance other than t itself (with replacement across the K draws), so a distractor
    index never equals the positive.

    Args:
        key: PRNG key.
        mask: bool[batch, frames] masked frames.
        num_negatives: K.
    Returns:
        (indices int32[batch, frames, K] frame indices into the same utterance,
         valid bool[batch, frames]: masked frames whose utterance has at least two masked frames).
    """
    batch, frames = mask.shape
    count = mask.sum(-1).astype(jnp.int32)
    order = jnp.argsort(~mask, axis=-1, stable=True).astype(jnp.int32)  # masked frames first, in time order
    own_rank = jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1
    high = jnp.maximum(count - 1, 1)[:, None, None]
    r = jax.random.randint(key, (batch, frames, num_negatives), 0, high)
    r = jnp.where(r >= own_rank[..., None], r + 1, r)
    r = jnp.minimum(r, frames - 1)
    idx = jnp.take_along_axis(order, r.reshape(batch, -1), axis=-1).reshape(batch, frames, num_negatives)
    valid = mask & (count >= 2)[:, None]
    return idx, valid


def sample_cross_negatives(key: jax.Array, mask: jax.Array, num_negatives: int) -> jax.Array:
    """Samples distractors from the masked frames of the whole batch (flat indices b * frames + t).

    Args:
        key: PRNG key.
        mask: bool[batch, frames].
        num_negatives: number of cross-sample distractors.
    Returns:
        int32[batch, frames, num_negatives] indices into the flattened [batch * frames] frames,
        never the frame itself.
    """
    batch, frames = mask.shape
    flat = mask.reshape(-1)
    count = flat.sum().astype(jnp.int32)
    order = jnp.argsort(~flat, stable=True).astype(jnp.int32)
    own_rank = (jnp.cumsum(flat, dtype=jnp.int32) - 1).reshape(batch, frames)
    r = jax.random.randint(key, (batch, frames, num_negatives), 0, jnp.maximum(count - 1, 1))
    r = jnp.where(r >= own_rank[..., None], r + 1, r)
    r = jnp.minimum(r, batch * frames - 1)
    return order[r]


def num_kept(num_frames: int, mask_prob: float) -> int:
    """Frames an `inverse_block_mask` of `num_frames` padded frames keeps per row (static)."""
    return max(1, math.ceil((1.0 - mask_prob) * num_frames))


def inverse_block_mask(
    key: jax.Array, frame_lengths: jax.Array, num_frames: int, *, mask_prob: float, block: int
) -> tuple[jax.Array, jax.Array]:
    """Inverse block masking (data2vec 2.0, Baevski et al., 2023, Sec. 3): blocks of visible
    frames are kept and everything else is masked.

    Each valid frame scores the largest of `block` uniform draws centred on it, and the
    round((1 - mask_prob) * L) best-scoring frames of an utterance of L valid frames stay
    visible: the visible frames gather in runs of about `block` around the highest draws, and
    every utterance of a batch keeps the same fraction.

    Args:
        key: PRNG key.
        frame_lengths: int[batch] valid frames.
        num_frames: padded frames T.
        mask_prob: fraction of valid frames masked.
        block: width of the visible blocks, in frames.
    Returns:
        (mask bool[batch, T], True = masked valid frame;
         keep int32[batch, num_kept(T, mask_prob)]: frame indices in time order holding every
         visible frame first by score; the extra ones, beyond an utterance's visible count,
         are masked or padding frames, which `mask` and the padding mask exclude).
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    lengths = jnp.asarray(frame_lengths, jnp.int32)
    t = jnp.arange(num_frames)
    valid = t[None, :] < lengths[:, None]
    noise = jax.random.uniform(key, (lengths.shape[0], num_frames))
    if block > 1:
        left = (block - 1) // 2
        padded = jnp.pad(noise, ((0, 0), (left, block - 1 - left)), constant_values=-1.0)
        noise = jax.lax.reduce_window(padded, -jnp.inf, jax.lax.max, (1, block), (1, 1), "VALID")
    noise = noise + 1e-6 * jax.random.uniform(jax.random.fold_in(key, 1), noise.shape)  # break ties
    score = jnp.where(valid, noise, -1.0)
    order = jnp.argsort(-score, axis=-1)
    rank = jnp.argsort(order, axis=-1)
    visible_count = jnp.round((1.0 - mask_prob) * lengths).astype(jnp.int32)
    visible = (rank < visible_count[:, None]) & valid
    keep = jnp.sort(order[:, : num_kept(num_frames, mask_prob)], axis=-1).astype(jnp.int32)
    return valid & ~visible, keep
