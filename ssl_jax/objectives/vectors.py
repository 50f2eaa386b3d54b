"""Unit vectors for cosine similarities, with a finite gradient at the zero vector."""

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """x / max(||x||, eps) over the last axis, in float32: [..., dim] -> [..., dim].

    Computed as x * rsqrt(max(||x||^2, eps^2)): at x = 0 (a silent or padded frame) the
    gradient is 1 / eps, finite, where `x / max(norm(x), eps)` differentiates the norm at zero
    and gives NaN.
    """
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))
