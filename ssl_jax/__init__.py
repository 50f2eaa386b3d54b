"""ssl_jax: self-supervised pretraining and evaluation of speech encoders in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so that `import ssl_jax.data.synth` does not pull in the model stack.
    if name == "Upstream":
        from ssl_jax.upstream import Upstream

        return Upstream
    raise AttributeError(f"module 'ssl_jax' has no attribute {name!r}")
