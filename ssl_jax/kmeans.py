"""Mini-batch k-means in JAX (Sculley, 2010), k-means++ seeding, and the cluster-quality
measures of the HuBERT paper (Hsu et al., 2021, Sec. IV-C: phone purity, cluster purity, PNMI).

The update is the one scikit-learn's `MiniBatchKMeans` makes: every center is the running mean
of all points ever assigned to it (a per-center learning rate of 1 / count), and a center that
has drawn almost no points is moved onto a random point of the current batch. The batch
functions are jitted with the points sharded over the mesh's batch axes and the centers
replicated, so a fit runs on a mesh as training does; the sums over points become
all-reduces.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np


# ----------------------------------------------------------------------------- assignment


def sq_distances(x: jax.Array, centers: jax.Array) -> jax.Array:
    """Squared Euclidean distances [points, k] of `x` [points, dim] to `centers` [k, dim]."""
    x = x.astype(jnp.float32)
    c = centers.astype(jnp.float32)
    d = (x * x).sum(-1)[:, None] - 2.0 * x @ c.T + (c * c).sum(-1)[None, :]
    return jnp.maximum(d, 0.0)


def assign(x: jax.Array, centers: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(nearest center int32[points], its squared distance f32[points])."""
    d = sq_distances(x, centers)
    idx = jnp.argmin(d, axis=-1).astype(jnp.int32)
    return idx, jnp.take_along_axis(d, idx[:, None], axis=-1)[:, 0]


# ----------------------------------------------------------------------------- seeding


def kmeans_plus_plus(rng: jax.Array, x: jax.Array, k: int, weights: jax.Array | None = None,
                     local_trials: int | None = None) -> jax.Array:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii, 2007): centers [k, dim] from `x`
    [points, dim].

    Each new center is the best (lowest resulting potential) of `local_trials` candidates drawn
    with probability proportional to the squared distance to the nearest chosen center
    (default 2 + ln k, as scikit-learn). Points of weight 0 (padding) are never drawn.
    """
    x = x.astype(jnp.float32)
    n = x.shape[0]
    w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
    trials = int(local_trials or 2 + int(math.log(k)))
    k0, rng = jax.random.split(rng)
    first = jax.random.categorical(k0, jnp.log(jnp.maximum(w, 1e-30)) + jnp.where(w > 0, 0.0, -jnp.inf))
    centers = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(x[first])
    closest = sq_distances(x, x[first][None])[:, 0]

    def body(i, carry):
        centers, closest, rng = carry
        rng, kc = jax.random.split(rng)
        logits = jnp.where(w > 0, jnp.log(jnp.maximum(closest * w, 1e-30)), -jnp.inf)
        cand = jax.random.categorical(kc, logits, shape=(trials,))
        d = sq_distances(x, x[cand])  # [points, trials]
        pot = (jnp.minimum(closest[:, None], d) * w[:, None]).sum(0)
        best = jnp.argmin(pot)
        centers = centers.at[i].set(x[cand[best]])
        return centers, jnp.minimum(closest, d[:, best]), rng

    centers, _, _ = jax.lax.fori_loop(1, k, body, (centers, closest, rng))
    return centers


# ----------------------------------------------------------------------------- updates


def minibatch_step(centers: jax.Array, counts: jax.Array, x: jax.Array, w: jax.Array,
                   rng: jax.Array, reassignment_ratio: float = 0.01
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One mini-batch update.

    Args:
        centers: f32[k, dim]; counts: f32[k] points assigned so far.
        x: f32[points, dim]; w: f32[points] 1 for real points, 0 for padding.
        rng: draws the points that replace starved centers.
        reassignment_ratio: a center whose count is below this fraction of the largest count
            is moved onto a batch point drawn by squared distance, its count set to the
            smallest count of the rest (scikit-learn's rule; 0 turns it off).
    Returns:
        (centers, counts, the batch's mean squared distance before the update).
    """
    k = centers.shape[0]
    idx, dist = assign(x, centers)
    w = w.astype(jnp.float32)
    onehot = jax.nn.one_hot(idx, k, dtype=jnp.float32) * w[:, None]  # [points, k]
    batch_counts = onehot.sum(0)
    sums = onehot.T @ x.astype(jnp.float32)
    new_counts = counts + batch_counts
    centers = jnp.where(
        batch_counts[:, None] > 0, (centers * counts[:, None] + sums) / jnp.maximum(new_counts, 1.0)[:, None], centers
    )
    if reassignment_ratio > 0:
        starved = (new_counts < reassignment_ratio * new_counts.max()) | (new_counts == 0)
        logits = jnp.where(w > 0, jnp.log(jnp.maximum(dist * w, 1e-30)), -jnp.inf)
        picks = jax.random.categorical(rng, logits, shape=(k,))
        centers = jnp.where(starved[:, None], x[picks].astype(jnp.float32), centers)
        floor = jnp.where(starved, jnp.inf, new_counts).min()
        new_counts = jnp.where(starved, jnp.where(jnp.isfinite(floor), floor, 0.0), new_counts)
    inertia = (dist * w).sum() / jnp.maximum(w.sum(), 1.0)
    return centers, new_counts, inertia


def batch_inertia(centers: jax.Array, x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of squared distances of the real points to their nearest center, their number)."""
    _, dist = assign(x, centers)
    w = w.astype(jnp.float32)
    return (dist * w).sum(), w.sum()


@dataclasses.dataclass
class KMeansResult:
    """A fit: `centers` [k, dim], `counts` [k], and the mean squared distance per point of
    each mini-batch before its update (`history`)."""

    centers: np.ndarray
    counts: np.ndarray
    history: list[float]


def fit(batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int, *, seed: int = 0,
        init_points: np.ndarray | None = None, max_steps: int = 100, reassignment_ratio: float = 0.01,
        sharding: jax.sharding.Sharding | None = None, replicated: jax.sharding.Sharding | None = None
        ) -> KMeansResult:
    """Mini-batch k-means over `batches` of (points f32[n, dim], weights f32[n]).

    Args:
        batches: mini-batches, each of one fixed shape (pad with weight-0 rows); at most
            `max_steps` are read after the seeding.
        k: clusters.
        init_points: points [m, dim] for k-means++ seeding (default: the first batch).
        sharding: a NamedSharding of the points [n, dim] (the weights follow its first axis);
        replicated: where the centers live (default: one device for both).
    """
    it: Iterator = iter(batches)
    rng = jax.random.key(seed)
    put = (lambda a, s: jax.device_put(a, s) if s is not None else jnp.asarray(a))  # noqa: E731
    first = next(it)
    seed_x = np.asarray(init_points if init_points is not None else first[0], np.float32)
    seed_w = np.ones((seed_x.shape[0],), np.float32) if init_points is not None else np.asarray(first[1], np.float32)
    if int((seed_w > 0).sum()) < k:
        raise ValueError(f"k-means++ needs at least k={k} points to seed from, got {int((seed_w > 0).sum())}")
    seed_fn = jax.jit(kmeans_plus_plus, static_argnums=(2,), out_shardings=replicated)
    centers = seed_fn(jax.random.fold_in(rng, 0), put(seed_x, replicated), k, put(seed_w, replicated))
    counts = put(np.zeros((k,), np.float32), replicated)
    step_fn = jax.jit(
        lambda c, n, x, w, r: minibatch_step(c, n, x, w, r, reassignment_ratio),
        out_shardings=(replicated, replicated, replicated) if replicated is not None else None,
    )
    w_sharding = None
    if sharding is not None:
        w_sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(sharding.spec[0]))
    history = []
    pending = [first]
    for i in range(max_steps):
        batch = pending.pop() if pending else next(it, None)
        if batch is None:
            break
        x, w = batch
        centers, counts, inertia = step_fn(centers, counts, put(np.asarray(x, np.float32), sharding),
                                           put(np.asarray(w, np.float32), w_sharding), jax.random.fold_in(rng, i + 1))
        history.append(float(inertia))
    return KMeansResult(np.asarray(centers), np.asarray(counts), history)


# ----------------------------------------------------------------------------- quality


@dataclasses.dataclass
class ClusterQuality:
    """HuBERT's measures of how well cluster ids z follow phone labels y over frames."""

    phone_purity: float  # E_z[max_y p(y|z)]: how pure a cluster is
    cluster_purity: float  # E_y[max_z p(z|y)]: how concentrated a phone is
    pnmi: float  # I(y; z) / H(y): share of the phone uncertainty a cluster id removes
    frames: int
    phones: int
    clusters_used: int


def quality(joint_counts: np.ndarray) -> ClusterQuality:
    """Measures from a [phones, clusters] table of frame counts."""
    c = np.asarray(joint_counts, np.float64)
    total = c.sum()
    if total <= 0:
        raise ValueError("no labelled frames to measure cluster quality on")
    p = c / total
    py, pz = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (py[:, None] * pz[None, :])[nz])).sum())
    hy = float(-(py[py > 0] * np.log(py[py > 0])).sum())
    return ClusterQuality(
        phone_purity=float(p.max(0).sum()),
        cluster_purity=float(p.max(1).sum()),
        pnmi=mi / hy if hy > 0 else 0.0,
        frames=int(total),
        phones=int((py > 0).sum()),
        clusters_used=int((pz > 0).sum()),
    )


# ----------------------------------------------------------------------------- codebooks


@dataclasses.dataclass
class Codebooks:
    """Frozen k-means targets: features are standardised by (`mean`, `std`) [dim], then each
    of `centers` (one [k_i, dim] array per target set) gives a cluster id per frame.

    `meta` records how they were fitted (source, layer, checkpoint, data, settings, figures).
    """

    mean: np.ndarray
    std: np.ndarray
    centers: list[np.ndarray]
    meta: dict

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(c.shape[0]) for c in self.centers)

    def save(self, path: str) -> str:
        import json
        import os

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp.npz"
        arrays = {f"centers_{i}": c for i, c in enumerate(self.centers)}
        np.savez(tmp, mean=self.mean, std=self.std, meta=np.asarray(json.dumps(self.meta)), **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str) -> "Codebooks":
        import json

        try:
            f = np.load(path)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with f:
                n = len([k for k in f.files if k.startswith("centers_")])
                if not n or "mean" not in f.files:
                    raise ValueError("not a k-means codebook file (no centers_0 / mean arrays)")
                return cls(
                    mean=np.asarray(f["mean"], np.float32),
                    std=np.asarray(f["std"], np.float32),
                    centers=[np.asarray(f[f"centers_{i}"], np.float32) for i in range(n)],
                    meta=json.loads(str(f["meta"])),
                )
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise ValueError(f"cannot read k-means codebooks from {path!r}: {e}") from e
