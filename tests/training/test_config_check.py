"""Tests for ssl_jax/training/config_check.py: the shared --config/--upstream/--workdir entry point."""

import subprocess
import sys
import textwrap

import pytest

from ssl_jax.training import config_check

SCRIPT = textwrap.dedent("""
    import sys
    from ssl_jax.training.config_check import run_upstream_command

    def with_flag(config, upstream, workdir, upstream_normalize=None):
        print("normalize:", upstream_normalize, upstream, workdir)

    def without_flag(config, upstream, workdir):
        print("ran:", upstream, workdir)

    fn = with_flag if sys.argv.pop(1) == "with" else without_flag
    run_upstream_command(fn, "config", "upstream")
""")


def _run(tmp_path, which, *flags):
    config = tmp_path / "cfg.py"
    config.write_text("from ml_collections import config_dict\n\ndef get_config():\n"
                      "    return config_dict.ConfigDict({'seed': 0})\n")
    args = [sys.executable, "-c", SCRIPT, which, f"--config={config}", "--upstream=fbank", "--workdir=w", *flags]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("flag,expected", [((), "None"), (("--upstream_normalize=true",), "True"),
                                           (("--upstream_normalize=false",), "False")])
def test_upstream_normalize_reaches_a_function_that_takes_it(tmp_path, flag, expected):
    r = _run(tmp_path, "with", *flag)
    assert r.returncode == 0, r.stderr
    assert f"normalize: {expected} fbank w" in r.stdout


def test_upstream_normalize_with_a_function_without_it(tmp_path):
    r = _run(tmp_path, "without")
    assert r.returncode == 0 and "ran: fbank w" in r.stdout, r.stderr
    r = _run(tmp_path, "without", "--upstream_normalize=true")
    assert r.returncode != 0 and "not supported" in r.stderr
    r = _run(tmp_path, "with", "--upstream_normalize=maybe")
    assert r.returncode != 0 and "upstream_normalize" in r.stderr


def test_unknown_override_names_the_valid_fields():
    from ml_collections import config_dict

    c = config_dict.ConfigDict({"train": {"steps": 1}})
    assert config_check.unknown_override(c, "train.steps") is None
    assert "valid fields: ['steps']" in config_check.unknown_override(c, "train.step")
