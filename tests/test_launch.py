"""The launchers in launch/: what `--dry-run` prints is the exact command line they run.

Pure bash, no JAX: each launcher runs with `--dry-run` under a made-up cluster environment, and
again for real with stand-ins for python, srun, scancel, scontrol and gcloud that record their
arguments, so the printed commands are checked against the executed ones.
"""

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.path.join(ROOT, "launch", "local_multiprocess.sh")
SLURM = os.path.join(ROOT, "launch", "slurm_gpu.sbatch")
TPU = os.path.join(ROOT, "launch", "cloud_tpu.sh")

# Overrides that survive only correct quoting: a space, a single quote, a double quote, a $.
OVERRIDES = ["--config.data.path=/data/my shards", "--config.train.init_from=/runs/it's \"$best\""]

# Appends its arguments (shell-quoted, one call per line) to $RECORD, with the variables the
# launchers set (JAX_* and XLA_FLAGS) on a line of their own before them; one write per call,
# as the local launcher's processes record at the same time.
RECORDER = """#!/usr/bin/env bash
call="$(printf 'ENV JAX_PLATFORMS=%q XLA_FLAGS=%q JAX_LOCAL_DEVICE_IDS=%q\\n' "${JAX_PLATFORMS-}" "${XLA_FLAGS-}" "${JAX_LOCAL_DEVICE_IDS-}"
  printf '%q ' "$(basename "$0")" "$@")"
printf '%s\\n' "$call" >> "$RECORD"
"""


def clean_env(**extra: str) -> dict:
    """No SLURM_*, TPU or XLA settings from the caller: only what a test gives."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(extra)
    return env


def launch(script: str, *args: str, env: dict, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)


def dry_run(script: str, *args: str, env: dict, cwd: str = ROOT) -> list[list[str]]:
    """The commands a launcher prints with --dry-run, each split into its argv."""
    proc = launch(script, "--dry-run", *args, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def fake(bin_dir, name: str, body: str = "") -> str:
    """An executable `name` in `bin_dir` that records its call, then runs `body`."""
    path = os.path.join(bin_dir, name)
    with open(path, "w") as f:
        f.write(RECORDER + body)
    os.chmod(path, 0o755)
    return path


def recorded(record) -> list[tuple[dict, list[str]]]:
    """(environment, argv) of every recorded call, argv[0] being the program's name."""
    lines = open(record).read().splitlines()
    calls = []
    for env_line, argv_line in zip(lines[::2], lines[1::2]):
        env = dict(kv.split("=", 1) for kv in shlex.split(env_line)[1:])
        calls.append((env, shlex.split(argv_line)))
    return calls


def setup_cfg_pins() -> tuple[str, str]:
    """(jax version, minimum python as 'X.Y') read from setup.cfg independently of the launchers."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    pins = [line.strip() for line in cfg["options"]["install_requires"].splitlines()]
    jax = next(p.split("==")[1] for p in pins if p.startswith("jax[cpu]=="))
    return jax, cfg["options"]["python_requires"].lstrip(">=").strip()


@pytest.mark.parametrize("script", [LOCAL, SLURM, TPU])
def test_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ local_multiprocess.sh


def local_expected(i: int, n: int, per: int, port: str, python: str = "python") -> list[str]:
    argv = ["env", "JAX_PLATFORMS=cpu", f"XLA_FLAGS=--xla_force_host_platform_device_count={per}", python]
    argv += ["-m", "ssl_jax.train", "--config=configs/w2v2_tiny.py", "--workdir=runs/mp", "--distributed"]
    argv += [f"--coordinator=localhost:{port}", f"--num_processes={n}", f"--process_id={i}"]
    return argv + (["--no_progress"] if i else []) + OVERRIDES


def test_local_dry_run_one_process_each():
    cmds = dry_run(LOCAL, "3", "2", "configs/w2v2_tiny.py", "runs/mp", *OVERRIDES, env=clean_env())
    port = cmds[0][9].rsplit(":", 1)[1]
    assert 20000 <= int(port) < 40000
    assert cmds == [local_expected(i, 3, 2, port) for i in range(3)]


def test_local_keeps_callers_xla_flags():
    env = clean_env(XLA_FLAGS="--xla_dump_to=/tmp/x", PORT="23456")
    cmds = dry_run(LOCAL, "2", "4", "configs/w2v2_tiny.py", "runs/mp", env=env)
    assert [c[2] for c in cmds] == ["XLA_FLAGS=--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=4"] * 2


def test_local_runs_what_it_prints_and_returns_a_failure(tmp_path):
    python = fake(tmp_path, "python", 'for a in "$@"; do [ "$a" != --process_id=1 ] || exit 3; done\n')
    env = clean_env(PYTHON=python, PORT="23456", RECORD=str(tmp_path / "record"))
    printed = dry_run(LOCAL, "2", "3", "configs/w2v2_tiny.py", "runs/mp", *OVERRIDES, env=env)
    assert printed == [local_expected(i, 2, 3, "23456", python) for i in range(2)]
    proc = launch(LOCAL, "2", "3", "configs/w2v2_tiny.py", "runs/mp", *OVERRIDES, env=env)
    assert proc.returncode == 3  # process 1's status
    calls = sorted(recorded(tmp_path / "record"), key=lambda c: [a for a in c[1] if a.startswith("--process_id=")])
    for (run_env, argv), cmd in zip(calls, printed):
        assert argv[1:] == cmd[4:]
        assert [f"JAX_PLATFORMS={run_env['JAX_PLATFORMS']}", f"XLA_FLAGS={run_env['XLA_FLAGS']}"] == cmd[1:3]
    assert len(calls) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["2", "4", "configs/w2v2_tiny.py"], "usage:"),
        (["two", "4", "configs/w2v2_tiny.py", "runs/mp"], "NUM_PROCESSES must be a positive integer"),
        (["2", "0", "configs/w2v2_tiny.py", "runs/mp"], "DEVICES_PER_PROCESS must be a positive integer"),
        (["2", "4", "configs/nope.py", "runs/mp"], "configs/nope.py"),
        (["2", "4", "configs/w2v2_tiny.py", "runs/mp", "stray"], "got 'stray'"),
    ],
)
def test_local_bad_usage(args, message):
    proc = launch(LOCAL, "--dry-run", *args, env=clean_env())
    assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


# ------------------------------------------------------------------ slurm_gpu.sbatch

SLURM_ENV = dict(
    SLURM_JOB_NODELIST="nodeA,nodeB",
    SLURM_NTASKS="16",
    SLURM_NNODES="2",
    SLURM_NTASKS_PER_NODE="8",
    SLURM_GPUS_ON_NODE="8",
    SLURM_CPUS_PER_TASK="12",
    SLURM_JOB_ID="1234",
)


def slurm_train(coordinator: str, python: str = "python") -> list[str]:
    argv = ["JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID", "exec", python, "-m", "ssl_jax.train"]
    argv += ["--config=configs/w2v2_base.py", "--workdir=/shared/runs/base", "--distributed"]
    argv += [f"--coordinator={coordinator}", "--num_processes=16", "--process_id=$SLURM_PROCID"]
    return argv + ["--no_progress", "--config.model.dtype=bfloat16"] + OVERRIDES


def test_slurm_dry_run_and_each_task(tmp_path):
    if shutil.which("scontrol"):
        pytest.skip("scontrol is installed: the fallback without it is not reachable")
    python = fake(tmp_path, "python")
    env = clean_env(**SLURM_ENV, PYTHON=python)
    [cmd] = dry_run(SLURM, "configs/w2v2_base.py", "/shared/runs/base", *OVERRIDES, env=env)
    assert cmd[:5] == ["srun", "--kill-on-bad-exit=1", "--cpus-per-task=12", "bash", "-c"] and len(cmd) == 6
    # Coordinator: the first node, port 20000 + job id.
    assert shlex.split(cmd[5]) == slurm_train("nodeA:21234", python)
    # Inside each task the process id and device come from that task's SLURM variables.
    for procid, localid in [(0, 0), (13, 5)]:
        task_env = clean_env(SLURM_PROCID=str(procid), SLURM_LOCALID=str(localid), RECORD=str(tmp_path / f"task{procid}"))
        subprocess.run(["bash", "-c", cmd[5]], env=task_env, check=True, timeout=30)
        [(run_env, argv)] = recorded(tmp_path / f"task{procid}")
        assert run_env["JAX_LOCAL_DEVICE_IDS"] == str(localid)
        expected = slurm_train("nodeA:21234", python)[3:]
        expected[expected.index("--process_id=$SLURM_PROCID")] = f"--process_id={procid}"
        assert argv[1:] == expected


def test_slurm_expands_ranges_with_scontrol(tmp_path):
    fake(tmp_path, "scontrol", '[ "$*" = "show hostnames gpu[017-018]" ] && printf "gpu017\\ngpu018\\n"\n')
    env = clean_env(**{**SLURM_ENV, "SLURM_JOB_NODELIST": "gpu[017-018]"}, RECORD=str(tmp_path / "record"))
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    [cmd] = dry_run(SLURM, "configs/w2v2_base.py", "/shared/runs/base", *OVERRIDES, env=env)
    assert "--coordinator=gpu017:21234" in shlex.split(cmd[5])


@pytest.mark.parametrize(
    "args, env_change, message",
    [
        (["configs/w2v2_base.py"], {}, "usage:"),
        (["configs/nope.py", "runs/x"], {}, "configs/nope.py"),
        (["configs/w2v2_base.py", "runs/x"], {"SLURM_NTASKS": None}, "SLURM_NTASKS"),
        (["configs/w2v2_base.py", "runs/x"], {"SLURM_GPUS_ON_NODE": "4"}, "one process per GPU"),
        (["configs/w2v2_base.py", "runs/x"], {"SLURM_GPUS_PER_TASK": "1"}, "--gpus-per-node"),
        (["configs/w2v2_base.py", "runs/x"], {"SLURM_JOB_NODELIST": "node[01-02]"}, "needs scontrol"),
    ],
)
def test_slurm_bad_usage(args, env_change, message):
    if "needs scontrol" in message and shutil.which("scontrol"):
        pytest.skip("scontrol is installed")
    env = clean_env(**SLURM_ENV)
    for k, v in env_change.items():
        env.pop(k) if v is None else env.__setitem__(k, v)
    proc = launch(SLURM, "--dry-run", *args, env=env)
    assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


def slurm_fakes(tmp_path, srun_body: str) -> dict:
    fake(tmp_path, "srun", srun_body)
    fake(tmp_path, "scancel", 'kill -TERM "$(cat "$SRUN_PID")"\n')
    fake(tmp_path, "scontrol", '[ "$1" != show ] || printf "nodeA\\nnodeB\\n"\n')
    env = clean_env(**SLURM_ENV, RECORD=str(tmp_path / "record"), SRUN_PID=str(tmp_path / "srun.pid"))
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    return env


def test_slurm_passes_the_exit_status_without_requeue(tmp_path):
    env = slurm_fakes(tmp_path, "exit 5\n")
    [printed] = dry_run(SLURM, "configs/w2v2_base.py", "/shared/runs/base", *OVERRIDES, env=env)
    os.remove(tmp_path / "record")  # the dry run's own scontrol call
    proc = launch(SLURM, "configs/w2v2_base.py", "/shared/runs/base", *OVERRIDES, env=env)
    assert proc.returncode == 5
    assert [argv for _, argv in recorded(tmp_path / "record")] == [["scontrol", "show", "hostnames", "nodeA,nodeB"], printed]


def test_slurm_time_limit_signal_stops_the_trainers_and_requeues(tmp_path):
    # The stand-in srun plays the trainers: it saves and exits 0 on SIGTERM.
    env = slurm_fakes(tmp_path, 'trap "exit 0" TERM\necho $$ > "$SRUN_PID"\nfor _ in $(seq 200); do sleep 0.05; done\nexit 1\n')
    proc = subprocess.Popen(["bash", SLURM, "configs/w2v2_base.py", "/shared/runs/base"], cwd=ROOT, env=env)
    deadline = time.time() + 10
    while not os.path.exists(tmp_path / "srun.pid") and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 sends five minutes before the limit
    assert proc.wait(timeout=20) == 0
    calls = [argv for _, argv in recorded(tmp_path / "record")]
    assert [c[0] for c in calls] == ["scontrol", "srun", "scancel", "scontrol"]
    assert calls[2] == ["scancel", "--signal=TERM", "1234"] and calls[3] == ["scontrol", "requeue", "1234"]


# ------------------------------------------------------------------ cloud_tpu.sh


def tpu_train(workdir: str = "/mnt/runs/base") -> list[str]:
    argv = [".venv/bin/python", "-m", "ssl_jax.train", "--config=configs/w2v2_base.py", f"--workdir={workdir}"]
    return argv + ["--distributed", "--config.model.dtype=bfloat16"] + OVERRIDES


def check_install(command: str, repo: str, ref: str, jax: str, python: str) -> None:
    assert command.startswith("--command=set -e; ")
    assert f"git clone -q {repo} ssl_jax;" in command
    assert f"git checkout -q --detach {ref};" in command
    assert f"py={python};" in command and f"sys.version_info < ({python[6:].replace('.', ', ')})" in command
    assert command.endswith(f".venv/bin/pip install -q -e . 'jax[tpu]=={jax}'")


def check_train(command: str, tmp_path, workdir: str = "/mnt/runs/base") -> None:
    """The remote command, run here in a folder laid out like a host's home: the trainer gets
    exactly the intended arguments."""
    prefix = "--command=cd ssl_jax && exec "
    assert command.startswith(prefix)
    assert shlex.split(command[len(prefix) :]) == tpu_train(workdir)
    bin_dir = tmp_path / "home" / "ssl_jax" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake(bin_dir, "python")
    record = tmp_path / "train_record"
    subprocess.run(["bash", "-c", command[len("--command=") :]], cwd=tmp_path / "home", env=clean_env(RECORD=str(record)), check=True, timeout=30)
    [(_, argv)] = recorded(record)
    assert argv == ["python"] + tpu_train(workdir)[1:]


def test_tpu_vm_dry_run(tmp_path):
    env = clean_env(TPU="my-v5e-64", ZONE="us-west4-a", REPO="https://example.org/ssl jax.git", REF="abc123")
    install, train = dry_run(TPU, "configs/w2v2_base.py", "/mnt/runs/base", *OVERRIDES, env=env)
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v5e-64", "--zone=us-west4-a", "--worker=all"]
    assert install[:-1] == ssh and train[:-1] == ssh
    jax, python = setup_cfg_pins()
    check_install(install[-1], "'https://example.org/ssl jax.git'", "abc123", jax, f"python{python}")
    check_train(train[-1], tmp_path)


def test_tpu_queued_resource_dry_run(tmp_path):
    env = clean_env(ZONE="us-west4-a", PROJECT="proj", ACCELERATOR_TYPE="v5litepod-64", RUNTIME_VERSION="v2-alpha-tpuv5-lite")
    env.update(REPO="https://example.org/r.git", REF="v1.0", QR_FLAGS="--spot")
    create, describe, install, train = dry_run(TPU, "--queued-resource", "qr1", "configs/w2v2_base.py", "/mnt/runs/base", *OVERRIDES, env=env)
    where = ["--zone=us-west4-a", "--project=proj"]
    assert create[:9] == ["gcloud", "compute", "tpus", "queued-resources", "create", "qr1", *where, "--accelerator-type=v5litepod-64"]
    assert create[9:] == ["--runtime-version=v2-alpha-tpuv5-lite", "--node-id=qr1", "--spot"]
    assert describe == ["gcloud", "compute", "tpus", "queued-resources", "describe", "qr1", *where, "--format=value(state.state)"]
    ssh = ["gcloud", "compute", "tpus", "queued-resources", "ssh", "qr1", *where, "--node=all", "--worker=all"]
    assert install[:-1] == ssh and train[:-1] == ssh
    check_train(train[-1], tmp_path)


def test_tpu_queued_resource_flags(tmp_path):
    env = clean_env(QR="qr1", ZONE="z", ACCELERATOR_TYPE="v5litepod-64", RUNTIME_VERSION="v2-alpha-tpuv5-lite", REPO="r", REF="v1.0")
    env.update(QR_FLAGS="--spot", NODE_ID="node-a")
    create = dry_run(TPU, "configs/w2v2_base.py", "/mnt/runs/base", env=env)[0]
    assert create[6:] == ["--zone=z", "--accelerator-type=v5litepod-64", "--runtime-version=v2-alpha-tpuv5-lite", "--node-id=node-a", "--spot"]


def test_tpu_waits_for_the_queued_resource_and_runs_what_it_prints(tmp_path):
    # describe answers WAITING_FOR_RESOURCES once, then ACTIVE.
    fake(tmp_path, "gcloud", '[ "$4" != describe ] || { [ -e "$RECORD.waited" ] && echo ACTIVE || { touch "$RECORD.waited"; echo WAITING_FOR_RESOURCES; }; }\n')
    env = clean_env(QR="qr1", ZONE="z", REPO="https://example.org/r.git", REF="v1.0", POLL_SECONDS="0", RECORD=str(tmp_path / "record"))
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    printed = dry_run(TPU, "configs/w2v2_base.py", "/mnt/runs/base", *OVERRIDES, env=env)
    assert [c[4] for c in printed] == ["describe", "ssh", "ssh"]  # an existing queued resource: no create
    proc = launch(TPU, "configs/w2v2_base.py", "/mnt/runs/base", *OVERRIDES, env=env)
    assert proc.returncode == 0, proc.stderr
    calls = [argv for _, argv in recorded(tmp_path / "record")]
    assert calls == [printed[0], printed[0], printed[1], printed[2]]


def test_tpu_stops_on_a_failed_queued_resource(tmp_path):
    fake(tmp_path, "gcloud", '[ "$4" != describe ] || echo FAILED\n')
    env = clean_env(QR="qr1", ZONE="z", REPO="r", REF="v1.0", POLL_SECONDS="0", RECORD=str(tmp_path / "record"))
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    proc = launch(TPU, "configs/w2v2_base.py", "/mnt/runs/base", env=env)
    assert proc.returncode == 1 and "qr1 is FAILED" in proc.stderr
    assert [argv[4] for _, argv in recorded(tmp_path / "record")] == ["describe"]


def test_tpu_repo_ref_and_pins_come_from_the_checkout(tmp_path):
    """In a checkout whose setup.cfg pins other versions, the hosts get its origin, its HEAD
    and its pins: nothing is a second, hard-coded copy."""
    repo = tmp_path / "checkout"
    (repo / "launch").mkdir(parents=True)
    (repo / "configs").mkdir()
    shutil.copy(TPU, repo / "launch" / "cloud_tpu.sh")
    (repo / "configs" / "x.py").write_text("")
    (repo / "setup.cfg").write_text("[options]\npython_requires = >=3.12\ninstall_requires =\n    jax[cpu]==9.8.7\n    jaxlib==9.8.7\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["remote", "add", "origin", "https://example.org/fork.git"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(git + args, check=True, capture_output=True, timeout=30)
    head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    env = clean_env(TPU="t", ZONE="z")
    install, _ = dry_run(str(repo / "launch" / "cloud_tpu.sh"), "configs/x.py", "/mnt/r", env=env, cwd=str(repo))
    check_install(install[-1], "https://example.org/fork.git", head, "9.8.7", "python3.12")


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["configs/w2v2_base.py"], dict(TPU="t", ZONE="z"), "usage:"),
        (["--bogus", "configs/w2v2_base.py", "/mnt/r"], dict(TPU="t", ZONE="z"), "unknown option '--bogus'"),
        (["configs/w2v2_base.py", "/mnt/r"], dict(TPU="t"), "set ZONE"),
        (["configs/w2v2_base.py", "/mnt/r"], dict(ZONE="z"), "set TPU=NAME"),
        (["configs/w2v2_base.py", "/mnt/r"], dict(TPU="t", QR="q", ZONE="z"), "not both"),
        (["configs/w2v2_base.py", "/mnt/r"], dict(TPU="t", ZONE="z", ACCELERATOR_TYPE="v5litepod-64"), "set QR=NAME"),
        (["configs/w2v2_base.py", "/mnt/r"], dict(QR="q", ZONE="z", ACCELERATOR_TYPE="v5litepod-64"), "needs RUNTIME_VERSION"),
        (["configs/w2v2_base.py", "gs://bucket/runs"], dict(TPU="t", ZONE="z"), "gcsfuse"),
        (["configs/nope.py", "/mnt/r"], dict(TPU="t", ZONE="z"), "configs/nope.py"),
        (["configs/w2v2_base.py", "/mnt/r", "stray"], dict(TPU="t", ZONE="z"), "got 'stray'"),
    ],
)
def test_tpu_bad_usage(args, env, message):
    proc = launch(TPU, "--dry-run", *args, env=clean_env(REPO="r", REF="v1.0", **env))
    assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


def test_readme_shows_the_real_dry_run():
    if shutil.which("scontrol"):
        pytest.skip("scontrol is installed: the README's example output comes from the fallback")
    env = clean_env(SLURM_JOB_NODELIST="nodeA,nodeB", SLURM_NTASKS="16", SLURM_JOB_ID="7")
    args = ["--dry-run", "configs/w2v2_base.py", "/shared/runs/w2v2_base", "--config.data.path=/shared/ls960_shards"]
    proc = launch(SLURM, *args, env=env)
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1
    assert proc.stdout in open(os.path.join(ROOT, "README.md")).read()
