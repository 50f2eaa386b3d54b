"""Two JAX processes on localhost (launch/local_multiprocess.sh, 4 fake CPU devices each) against
one process with 8: same losses, a SIGTERM to one process stops both at the same step, the
resume is exact, and a dead peer ends the run with an error instead of a hang."""

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from ssl_jax.training import loop
from ssl_jax.training.logging import read_metrics
from tests.helpers import ROOT, multiprocess_config

STEPS = 10

CONFIG = '''
import sys
sys.path.insert(0, {root!r})
from tests.helpers import multiprocess_config


def get_config():
    return multiprocess_config({corpus!r}, {cache!r}, {steps})
'''


def _losses(workdir: str) -> dict[int, float]:
    rows = [(r["step"], r["loss"]) for r in read_metrics(workdir) if "loss" in r]
    assert len({s for s, _ in rows}) == len(rows), f"a step was logged twice: {rows}"
    return dict(rows)


def _wait_for_step(workdir: str, step: int, proc=None, timeout: float = 600) -> None:
    t0 = time.time()
    path = os.path.join(workdir, "metrics.jsonl")
    while time.time() - t0 < timeout:
        if os.path.exists(path) and any(s >= step for s in _losses(workdir)):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before step {step}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no step {step} in {timeout} s")


def _pid(workdir: str, process_id: int) -> int:
    """The pid of the trainer process `process_id` of the run in `workdir`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"ssl_jax.train" in args and f"--workdir={workdir}".encode() in args \
                and f"--process_id={process_id}".encode() in args:
            return int(pid)
    raise AssertionError(f"no process {process_id} of {workdir}")


def _launch(config_file: str, workdir: str, *flags: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)  # the launcher sets 4 devices per process
    return subprocess.Popen(
        ["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "2", "4", config_file, workdir,
         "--no_progress", *flags],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def setup(tiny_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mp")
    cache = str(tmp / "xla")
    config_file = str(tmp / "config.py")
    with open(config_file, "w") as f:
        f.write(CONFIG.format(root=ROOT, corpus=tiny_corpus, cache=cache, steps=STEPS))
    reference = str(tmp / "one_process")
    summary = loop.train(multiprocess_config(tiny_corpus, cache, STEPS), reference, progress=False)
    assert summary["devices"] == 8 and summary["steps"] == STEPS
    return tmp, config_file, _losses(reference), tiny_corpus, cache


def test_sigterm_stops_a_single_process_run_with_a_checkpoint(setup):
    tmp, _, reference, corpus, cache = setup
    workdir = str(tmp / "sigterm")
    # The handler is installed on the main thread; the signal comes from another one mid-run.
    threading.Thread(target=lambda: (_wait_for_step(workdir, 2), os.kill(os.getpid(), signal.SIGTERM)),
                     daemon=True).start()
    summary = loop.train(multiprocess_config(corpus, cache, STEPS), workdir, progress=False)
    stopped = summary["steps"]
    assert summary["stopped_early"] and 2 <= stopped < STEPS
    assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(stopped)]
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, stopped + 1))
    np.testing.assert_allclose([losses[s] for s in losses], [reference[s] for s in losses], rtol=1e-6)


def test_two_processes_match_one_stop_together_and_resume_exactly(setup):
    tmp, config_file, reference, _, _ = setup
    workdir = str(tmp / "two_processes")
    run = _launch(config_file, workdir)
    _wait_for_step(workdir, 2, run)
    os.kill(_pid(workdir, 1), signal.SIGTERM)  # one process only
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-3000:]
    stops = [line.split("stopping at step ")[1].split(":")[0] for line in out.splitlines() if "stopping at step" in line]
    assert len(stops) == 2 and stops[0] == stops[1], stops  # both processes, the same step
    stopped = int(stops[0])
    assert stopped < STEPS and os.listdir(os.path.join(workdir, "checkpoints")) == [str(stopped)]
    for i in range(2):
        assert f"process {i} of 2 reads 4 of the 8 utterances of every global batch" in out

    resumed = _launch(config_file, workdir)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["resumed_from"] == stopped and summary["steps"] == STEPS and summary["devices"] == 8
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([losses[s] for s in range(1, STEPS + 1)], [reference[s] for s in range(1, STEPS + 1)],
                               rtol=1e-5)


def test_a_dead_peer_ends_the_run_with_an_error(setup):
    tmp, config_file, _, _, _ = setup
    workdir = str(tmp / "dead_peer")
    run = _launch(config_file, workdir, "--heartbeat_timeout=10")
    _wait_for_step(workdir, 2, run)
    os.kill(_pid(workdir, 1), signal.SIGKILL)
    t0 = time.time()
    out, _ = run.communicate(timeout=180)  # a hang fails here
    assert run.returncode != 0
    assert time.time() - t0 < 120
    assert "stopped sending heartbeats" in out, out[-3000:]
