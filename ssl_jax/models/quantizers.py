"""Product quantizer with Gumbel-softmax code selection (wav2vec 2.0, Baevski et al., 2020, Sec. 3.1;
Jang et al., 2017): G codebooks of V entries, one entry chosen per group and concatenated."""

import flax.linen as nn
import jax
import jax.numpy as jnp


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
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("conv_channels", "codebook")),
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
