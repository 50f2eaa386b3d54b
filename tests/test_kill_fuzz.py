"""kill -9 fuzz of the trainer at a small size (benchmarks/kill_fuzz.py has the 20-kill run):
killed at random moments and resumed, the run logs every step once, its losses and final
train state equal an uninterrupted run's, and a partly written checkpoint is never chosen."""

import importlib.util
import os
import re

from tests.helpers import ROOT


def test_killed_and_resumed_run_matches_uninterrupted(tiny_corpus, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("kill_fuzz", os.path.join(ROOT, "benchmarks", "kill_fuzz.py"))
    kill_fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kill_fuzz)
    rc = kill_fuzz.main(["--kills=4", "--kinds=step,save,startup,save", f"--workdir={tmp_path}",
                         f"--corpus={tiny_corpus}"])
    out = capsys.readouterr().out
    assert rc == 0, out
    kills = [line for line in out.splitlines() if line.startswith("kill ")]
    assert len(kills) == 4 and not any("run had ended" in k for k in kills), out
    # Both "save" kills landed while a checkpoint was being written.
    assert int(re.search(r"(\d+) left a partly written checkpoint, none chosen", out).group(1)) >= 2, out
    assert "equal the reference's" in out, out
