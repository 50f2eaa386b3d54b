"""Vector quantizers.

* `GumbelVectorQuantizer`: product quantizer with Gumbel-softmax code selection (wav2vec 2.0,
  Baevski et al., 2020, Sec. 3.1; Jang et al., 2017): G codebooks of V entries, one entry chosen
  per group and concatenated.
* `VectorQuantizer`: VQ-VAE's nearest-neighbour quantizer (van den Oord et al., 2017, "Neural
  Discrete Representation Learning", Sec. 3.2): a learned codebook, the straight-through
  estimator, and the codebook and commitment losses.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def gumbel_temperature(schedule: tuple[float, float, float], step) -> jax.Array:
    """Gumbel-softmax temperature at update `step`: max(start * decay**step, floor) for
    `schedule` = (start, floor, decay) (wav2vec 2.0's per-update decay)."""
    start, floor, decay = schedule
    return jnp.maximum(start * jnp.power(decay, jnp.asarray(step, jnp.float32)), floor)


class GumbelVectorQuantizer(nn.Module):
    """Maps features to codevectors.

    Attributes:
      num_groups: G codebooks.
      num_vars: V entries per codebook.
      codevector_dim: size of the output (G entries of codevector_dim // G, concatenated).
    """

    num_groups: int
    num_vars: int
    codevector_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, features: jax.Array, frame_mask: jax.Array, *, temperature: float | jax.Array = 1.0, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """Quantises features.

        Args:
          features: [batch, frames, c].
          frame_mask: bool[batch, frames], the frames the perplexity is taken over (wav2vec 2.0:
            the masked valid frames, whose targets the contrastive task uses). Every frame is
            quantised either way.
          temperature: Gumbel-softmax temperature (training only).
          deterministic: True: hard argmax codes; False: straight-through Gumbel-softmax with noise
            from the `gumbel` RNG stream.
        Returns:
          codevectors [batch, frames, codevector_dim] and the perplexity (scalar) of the soft
          code distribution averaged over the `frame_mask` frames, summed over groups (G when
          no frame is marked).
        """
        g, v = self.num_groups, self.num_vars
        if self.codevector_dim % g:
            raise ValueError(f"codevector_dim {self.codevector_dim} is not divisible by {g} groups")
        b, t, _ = features.shape
        logits = nn.Dense(
            g * v,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("conv_in", "codebook")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("codebook",)),
            name="weight_proj",
        )(features)
        logits = logits.astype(jnp.float32).reshape(b, t, g, v)
        codebook = self.param(
            "codevectors",
            nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("codebook", "codevector")),
            (g * v, self.codevector_dim // g),
        )

        probs = jax.nn.softmax(logits, axis=-1)
        m = frame_mask.astype(jnp.float32)[..., None, None]
        marginal = (probs * m).sum(axis=(0, 1)) / jnp.maximum(m.sum(), 1.0)  # [G, V]
        perplexity = jnp.exp(-jnp.sum(marginal * jnp.log(marginal + 1e-7), axis=-1)).sum()

        if deterministic:
            codes = jax.nn.one_hot(jnp.argmax(logits, axis=-1), v, dtype=jnp.float32)
        else:
            noise = jax.random.gumbel(self.make_rng("gumbel"), logits.shape, jnp.float32)
            soft = jax.nn.softmax((logits + noise) / temperature, axis=-1)
            hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), v, dtype=jnp.float32)
            codes = hard + soft - jax.lax.stop_gradient(soft)
        cb = codebook.reshape(g, v, -1).astype(self.dtype)
        out = jnp.einsum("btgv,gvd->btgd", codes.astype(self.dtype), cb)
        return out.reshape(b, t, self.codevector_dim), perplexity


class VectorQuantizer(nn.Module):
    """Nearest codebook entry in L2 with a straight-through gradient (VQ-VAE).

    z_q = z + stop_gradient(e - z), so the forward value is the entry e and the gradient with
    respect to z_q passes unchanged to z. The codebook learns only from the codebook loss
    ||sg(z) - e||^2 and the encoder only from the commitment loss ||z - sg(e)||^2 (which the
    objective weighs by beta) besides what reaches it through z_q. Both losses are mean squares
    over the valid frames and the code dimensions (van den Oord et al. write squared norms; the
    mean keeps them on the scale of a mean-square reconstruction loss).

    Attributes:
      num_codes: K codebook entries.
      code_dim: D, the width of the inputs and entries.
      init_std: standard deviation of the entries' initial values (1: the scale of inputs
        standardised per dimension).
    """

    num_codes: int
    code_dim: int
    init_std: float = 1.0

    @nn.compact
    def __call__(self, z: jax.Array, frame_mask: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """Quantises z.

        Args:
          z: [batch, frames, code_dim] encoder outputs.
          frame_mask: bool[batch, frames]; padded frames take no part in the losses or the
            perplexity.
        Returns:
          (quantized [batch, frames, code_dim] float32 (0 on padding), codes int32[batch, frames]
          (the nearest entry; -1 on padding), codebook_loss, commitment_loss (scalars, mean
          squares over valid frames and dims), perplexity (exp of the entropy of the codes'
          histogram over the valid frames: 1 when one code takes every frame, K when all are
          used equally; 1 when no frame is valid)).
        """
        if self.num_codes < 2 or self.code_dim < 1:
            raise ValueError(f"VectorQuantizer needs num_codes >= 2 and code_dim >= 1, got {self.num_codes}, {self.code_dim}")
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"VectorQuantizer expects inputs of width {self.code_dim}, got {z.shape}")
        codebook = self.param(
            "codebook", nn.with_logical_partitioning(nn.initializers.normal(self.init_std), ("codebook", "codevector")),
            (self.num_codes, self.code_dim),
        )
        z = z.astype(jnp.float32)
        valid = frame_mask.astype(bool)
        distances = (jnp.sum(jnp.square(z), -1, keepdims=True) - 2.0 * jnp.einsum("btd,kd->btk", z, codebook)
                     + jnp.sum(jnp.square(codebook), -1))
        codes = jnp.argmin(distances, axis=-1).astype(jnp.int32)
        e = jnp.take(codebook, codes, axis=0)
        m = valid[..., None].astype(jnp.float32)
        n = jnp.maximum(m.sum() * self.code_dim, 1.0)
        codebook_loss = jnp.sum(jnp.square(jax.lax.stop_gradient(z) - e) * m) / n
        commitment_loss = jnp.sum(jnp.square(z - jax.lax.stop_gradient(e)) * m) / n
        quantized = jnp.where(valid[..., None], z + jax.lax.stop_gradient(e - z), 0.0)
        counts = jnp.sum(jax.nn.one_hot(codes, self.num_codes, dtype=jnp.float32) * m, axis=(0, 1))
        probs = counts / jnp.maximum(counts.sum(), 1.0)
        perplexity = jnp.exp(-jnp.sum(probs * jnp.log(jnp.where(probs > 0, probs, 1.0))))
        return quantized, jnp.where(valid, codes, -1), codebook_loss, commitment_loss, perplexity
