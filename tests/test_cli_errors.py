"""User errors at the command line: one line naming the fix, a non-zero exit, no traceback."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "/nonexistent/ssl_jax_input"

CASES = {
    "train, missing config": (["ssl_jax.train", "--config=configs/nope.py", "--workdir={tmp}"], "configs/nope.py"),
    "train, missing data.path": (
        ["ssl_jax.train", "--config=configs/w2v2_tiny.py", "--workdir={tmp}", f"--config.data.path={MISSING}"],
        "python -m ssl_jax.data.prepare",
    ),
    "evaluate, missing upstream": (
        ["ssl_jax.evaluate", "--config=configs/eval/superb_tiny.py", f"--upstream={MISSING}", "--workdir={tmp}"],
        "no such checkpoint path",
    ),
    "finetune, missing upstream": (
        ["ssl_jax.finetune", "--config=configs/finetune_ctc_tiny.py", f"--upstream={MISSING}", "--workdir={tmp}"],
        "expected a workdir",
    ),
    "convert, missing source": (["ssl_jax.convert", "--from=hf", f"--src={MISSING}", "--out={tmp}"], "config.json"),
    "prepare, missing source": (["ssl_jax.data.prepare", f"--src={MISSING}", "--out={tmp}"], "no such folder"),
    "synth, output is a file": (["ssl_jax.data.synth", "--out={file}", "--hours=0.001"], "is not a folder"),
    "cluster, missing config": (["ssl_jax.cluster", "--config=configs/nope.py", "--workdir={tmp}"], "configs/nope.py"),
    "bench, missing config": (["ssl_jax.bench", "--config=configs/nope.py"], "configs/nope.py"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line(case, tmp_path):
    args, hint = CASES[case]
    file = tmp_path / "a_file"
    file.write_text("")
    args = [a.format(tmp=tmp_path / "out", file=file) for a in args]
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and hint in errors[0], proc.stderr[-2000:]
