"""Test-wide set-up: CPU only, 8 fake devices for sharding tests, a shared tiny corpus."""

import os

# Must precede the first `import jax` anywhere in the test session.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A small embedded corpus shared by the whole session: a shard folder path."""
    from ssl_jax.data import synth

    out = tmp_path_factory.mktemp("corpus")
    synth.build_corpus(str(out), hours=0.05, seed=0)
    return str(out)


@pytest.fixture(scope="session")
def tiny_eval_corpus(tmp_path_factory):
    """A tiny evaluation corpus (every split, 2% of the counts) shared by the session."""
    from ssl_jax.data import synth

    out = str(tmp_path_factory.mktemp("evalcorpus") / "c")
    synth.build_eval_corpus(out, seed=0, scale=0.02, num_workers=2)
    return out
