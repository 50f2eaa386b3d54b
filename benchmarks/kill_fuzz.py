"""kill -9 fuzz of the trainer: a tiny run is killed (SIGKILL) at random moments and resumed
each time; its losses, its metrics log and its final train state must equal an uninterrupted
run's, and a partly written checkpoint is never the one chosen.

  python benchmarks/kill_fuzz.py --kills=20 --workdir=/tmp/kill_fuzz

The moments are drawn from three kinds, in turn at random:
  startup  a uniform time after launch, or the first step past those already logged if it
           comes sooner (imports, compile, restore, the first steps);
  step     a uniform time into a random step after the latest checkpoint;
  save     the moment a checkpoint folder is being written (Orbax's temporary folder seen).
After each kill the script checks the checkpoint folder: the step the trainer would restore
(`CheckpointManager.latest_step`) is a finished checkpoint, never a temporary one. It prints
one line per kill and the totals, and exits 1 on any mismatch (tests/test_kill_fuzz.py runs it
at a small size).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

KINDS = ("startup", "step", "save")


def overrides(corpus: str, steps: int, cache: str) -> list[str]:
    """A tiny log-mel wav2vec 2.0 run with a checkpoint every 2 steps."""
    fields = {
        "data.path": corpus, "data.max_seconds": 1.0, "data.min_seconds": 0.5, "data.num_buckets": 1,
        "model.frontend": "logmel", "model.hidden_size": 32, "model.num_layers": 2, "model.num_heads": 2,
        "model.intermediate_size": 64, "model.num_conv_pos_embeddings": 8,
        "model.num_conv_pos_embedding_groups": 4, "model.num_codevectors_per_group": 16,
        "model.codevector_dim": 16, "model.proj_codevector_dim": 16,
        "objective.num_negatives": 5, "objective.mask_length": 4, "objective.min_masks": 2,
        "train.steps": steps, "train.batch_size": 4, "train.log_every": 1, "train.eval_every": 0,
        "train.eval_batches": 0, "train.checkpoint_every": 2, "train.abx_probe.speakers": 0,
        "train.compilation_cache": cache,
    }
    return [f"--config.{k}={v}" for k, v in fields.items()]


def launch(workdir: str, flags: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ssl_jax.train", f"--config={ROOT}/configs/w2v2_tiny.py",
           f"--workdir={workdir}", "--no_progress", *flags]
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one device (the test suite's fake devices would slow it down)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def logged_steps(workdir: str) -> list[int]:
    """Steps of metrics.jsonl in file order (a line cut by the kill is ignored)."""
    path = os.path.join(workdir, "metrics.jsonl")
    steps = []
    if os.path.exists(path):
        for line in open(path):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in rec:
                steps.append(rec["step"])
    return steps


def losses(workdir: str) -> dict[int, float]:
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def checkpoint_folders(workdir: str) -> tuple[list[int], list[str]]:
    """(finished step folders, temporary folders) under workdir/checkpoints."""
    folder = os.path.join(workdir, "checkpoints")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if not n.isdigit())


def writes(workdir: str) -> set[tuple[str, int]]:
    """(name, inode) of the temporary checkpoint folders: a rewrite under the same name is new."""
    folder = os.path.join(workdir, "checkpoints")
    out = set()
    for n in checkpoint_folders(workdir)[1]:
        try:
            out.add((n, os.stat(os.path.join(folder, n)).st_ino))
        except FileNotFoundError:
            pass
    return out


def wait_until(proc: subprocess.Popen, ready, timeout: float) -> bool:
    """Polls `ready()` until it holds (True) or the process ends or `timeout` passes (False)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ready():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    return False


def kill_once(workdir: str, flags: list[str], kind: str, rng: np.random.Generator, startup: float,
              step_time: float, steps: int) -> dict:
    """Launches, kills at a moment of `kind`, and reports what the folder holds afterwards."""
    done, _ = checkpoint_folders(workdir)
    stale = writes(workdir)
    # A step past what the file already holds (lines after the checkpoint are rewound on resume,
    # so older lines must not satisfy the wait), before the run's end.
    first = max([*done, *logged_steps(workdir), 0]) + 1
    if kind == "step" and first >= steps:
        kind = "startup"
    proc = launch(workdir, flags)
    t0 = time.time()
    seen = []
    if kind == "startup":
        wait_until(proc, lambda: any(s >= first for s in logged_steps(workdir)), rng.uniform(0.0, startup))
    elif kind == "step":
        target = int(rng.integers(first, min(first + 3, steps)))  # progress of 1-3 steps per kill
        def reached():
            steps_now = logged_steps(workdir)
            if not seen and any(s >= first for s in steps_now):
                seen.append(time.time() - t0)  # this launch's start-up
            return any(s >= target for s in steps_now)

        if wait_until(proc, reached, 10 * startup):
            time.sleep(rng.uniform(0.0, step_time))
    else:
        wait_until(proc, lambda: bool(writes(workdir) - stale), 10 * startup)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if finished and proc.returncode != 0:
        raise SystemExit(f"the trainer failed before it was killed:\n{proc.stderr.read()[-3000:]}")
    done, partial = checkpoint_folders(workdir)
    from ssl_jax.training.checkpoint import CheckpointManager

    chosen = CheckpointManager(workdir, async_save=False).latest_step() if done or partial else None
    return {"kind": kind, "startup_s": seen[0] if seen else None, "after_s": round(time.time() - t0, 2), "finished": finished,
            "logged": max(logged_steps(workdir), default=0), "checkpoints": done, "partial": partial,
            "new_partial": sorted(writes(workdir) - stale),
            "chosen": chosen, "chosen_ok": chosen is None or (chosen in done and chosen == max(done))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=0, help="training steps (default: 3 x kills + 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default="", help="comma-separated kinds of moment, one per kill (default: random)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--corpus", default="", help="shard folder (default: a tiny corpus built under --workdir)")
    args = p.parse_args(argv)
    if args.kinds and not set(args.kinds.split(",")) <= set(KINDS):
        p.error(f"--kinds takes {', '.join(KINDS)}; got {args.kinds!r}")
    steps = args.steps or 3 * args.kills + 6
    os.makedirs(args.workdir, exist_ok=True)
    corpus = args.corpus
    if not corpus:
        from ssl_jax.data import synth

        corpus = os.path.join(args.workdir, "corpus")
        if not os.path.exists(os.path.join(corpus, "corpus.json")):
            synth.build_corpus(corpus, hours=0.05, seed=0)
    flags = overrides(corpus, steps, os.path.join(args.workdir, "xla"))
    reference, fuzzed = os.path.join(args.workdir, "reference"), os.path.join(args.workdir, "fuzzed")
    for d in (reference, fuzzed):
        shutil.rmtree(d, ignore_errors=True)

    t0 = time.time()
    proc = launch(reference, flags)
    first = None
    while proc.poll() is None:
        if first is None and logged_steps(reference):
            first = time.time() - t0
        time.sleep(0.005)
    if proc.returncode != 0:
        print(proc.stderr.read()[-3000:])
        return 1
    wall = time.time() - t0
    startup = first or wall
    step_time = max((wall - startup) / max(steps - 1, 1), 1e-3)
    print(f"reference: {steps} steps in {wall:.1f} s (start-up {startup:.1f} s, {1e3 * step_time:.0f} ms/step)")

    rng = np.random.default_rng(args.seed)
    reports = []
    for k in range(args.kills):
        # The first kill is a "step" one: it measures a launch's start-up with a warm compile cache.
        kind = "step" if k == 0 else KINDS[int(rng.integers(len(KINDS)))]
        if args.kinds:
            kind = args.kinds.split(",")[k % len(args.kinds.split(","))]
        r = kill_once(fuzzed, flags, kind, rng, startup, step_time, steps)
        startup = r["startup_s"] or startup
        reports.append(r)
        print(f"kill {k + 1:2d} ({r['kind']:7s}) after {r['after_s']:5.2f} s: logged step {r['logged']:3d}, "
              f"checkpoints {r['checkpoints']}, partial {r['partial']}, chosen {r['chosen']}"
              + (" [run had ended]" if r["finished"] else ""))
    proc = launch(fuzzed, flags)
    _, err = proc.communicate()
    if proc.returncode != 0:
        print(err[-3000:])
        return 1

    failures = [f"kill {k + 1}: step {r['chosen']} chosen among {r['checkpoints']} / {r['partial']}"
                for k, r in enumerate(reports) if not r["chosen_ok"]]
    order = logged_steps(fuzzed)
    if order != list(range(1, steps + 1)):
        failures.append(f"metrics.jsonl steps are {order}, not 1..{steps} once each")
    a, b = losses(reference), losses(fuzzed)
    if not np.allclose([b.get(s, np.nan) for s in sorted(a)], [a[s] for s in sorted(a)], rtol=1e-6, atol=0):
        failures.append(f"losses differ: reference {a}, fuzzed {b}")
    from ssl_jax.training.checkpoint import load_state

    (sa, _), (sb, _) = load_state(reference), load_state(fuzzed)
    import jax

    if jax.tree.structure(sa) != jax.tree.structure(sb) or not all(
            jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.allclose(x, y, rtol=1e-5, atol=1e-7)), sa, sb))):
        failures.append("the final train states differ")

    during_save = sum(bool(r["new_partial"]) for r in reports)
    kinds = ", ".join(f"{sum(r['kind'] == k for r in reports)} {k}" for k in KINDS)
    print(f"{len(reports)} kills ({kinds}); "
          f"{during_save} left a partly written checkpoint, none chosen"
          if not failures else "FAILED")
    print(f"final run: steps 1..{steps} once each, losses and train state equal the reference's"
          if not failures else "\n".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
