"""Processes killed with SIGKILL: the trainer at random moments (benchmarks/kill_fuzz.py at a
small size: 3 kills, one of each kind; the script's default is 20), which resumes to the uninterrupted run's losses
and state and never chooses a partly written checkpoint; and a data worker, which ends the run
with a one-line error instead of a hang."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time

from tests.helpers import ROOT


def _kill_fuzz():
    spec = importlib.util.spec_from_file_location("kill_fuzz", os.path.join(ROOT, "benchmarks", "kill_fuzz.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_killed_and_resumed_run_matches_uninterrupted(tiny_corpus, tmp_path, capsys):
    rc = _kill_fuzz().main(["--kills=3", "--kinds=step,save,startup", f"--workdir={tmp_path}",
                            f"--corpus={tiny_corpus}"])
    out = capsys.readouterr().out
    assert rc == 0, out
    kills = [line for line in out.splitlines() if line.startswith("kill ")]
    assert len(kills) == 3 and not any("run had ended" in k for k in kills), out
    # The "save" kill landed while a checkpoint was being written.
    assert int(re.search(r"(\d+) left a partly written checkpoint, none chosen", out).group(1)) >= 1, out
    assert "equal the reference's" in out, out


def test_dead_data_worker_ends_the_run_with_one_line(tiny_corpus, tmp_path):
    kill_fuzz = _kill_fuzz()
    workdir = str(tmp_path / "run")
    flags = kill_fuzz.overrides(tiny_corpus, 1000, str(tmp_path / "xla")) + ["--config.data.num_workers=2"]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen([sys.executable, "-m", "ssl_jax.train", "--config=configs/w2v2_tiny.py",
                             f"--workdir={workdir}", "--no_progress", *flags],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not kill_fuzz.logged_steps(workdir):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - t0 < 300, "no step in 300 s"
        time.sleep(0.1)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = [int(c) for c in children if b"multiprocessing-fork" in open(f"/proc/{c}/cmdline", "rb").read()]
    assert workers, children
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the trainer hung after its data workers died")
    assert proc.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "a data worker process died" in errors[0] and "rerun" in errors[0], err[-3000:]
