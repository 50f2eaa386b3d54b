"""`python -m ssl_jax.train --config=configs/NAME.py --workdir=DIR`: self-supervised pretraining.

Resumes from the latest checkpoint in DIR; writes TensorBoard events, Orbax checkpoints and
DIR/metrics.jsonl. `--config.a.b=value` overrides a config field; an unknown field is an
error naming the valid ones. Multi-host: `--distributed` calls `jax.distributed.initialize()`
(arguments from the cluster environment, or `--coordinator/--num_processes/--process_id`).
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from ssl_jax.training.config_check import check_overrides, user_errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training recipe (configs/NAME.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, TensorBoard, metrics.jsonl.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Initialise jax.distributed (multi-process runs).")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 (default: from the environment).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (default: from the environment).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (default: from the environment).")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds without a heartbeat after which a process counts as dead and the run stops.")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "Hide the progress bar.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-save chatter
    import jax

    if _DISTRIBUTED.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
            heartbeat_timeout_seconds=_HEARTBEAT.value,
        )
    from ssl_jax.training import loop

    summary = loop.train(_CONFIG.value, _WORKDIR.value, progress=not _NO_PROGRESS.value)
    if jax.process_index() == 0:
        print(loop.format_summary(summary), flush=True)


if __name__ == "__main__":
    check_overrides(sys.argv)
    app.run(user_errors(main))
