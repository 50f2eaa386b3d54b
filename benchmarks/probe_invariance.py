"""Does the probe see what an upstream holds? FBANK against invertible linear maps of FBANK.

  python benchmarks/probe_invariance.py [--tasks=pr,sid] [--workdir=/tmp/probe_invariance] [--old]

A linear probe over a weighted sum of layers should score an upstream whose first hidden
state is an invertible linear map of FBANK about as FBANK itself. Three upstreams are probed
with configs/eval/superb_tiny.py on the evaluation corpus:

* `fbank`: SUPERB's FBANK baseline;
* `fbank-rot`: FBANK times a fixed random 80 x 80 matrix (invertible);
* `fbank-proj`: 50 Hz frames, a random linear projection of pairs of FBANK frames to 128
  dimensions as hidden state 0, and four deeper "layers", each a fixed random tanh map of the
  one before: what an encoder with a linear log-mel front end looks like to the probe.

The table prints each metric and its difference from FBANK, with paired-bootstrap marks.
`--old` uses the probe settings before the probe fix (lr 2e-3, 1500 steps, early stopping
from the start), which let the PR head stop on its CTC plateau.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ssl_jax import evaluate  # noqa: E402
from ssl_jax.downstream import report, upstreams  # noqa: E402
from ssl_jax.training.config_check import load_config_file  # noqa: E402
from ssl_jax.upstream import SAMPLE_RATE  # noqa: E402


class MappedFbank(upstreams.FeatureUpstream):
    """FBANK through fixed random maps: `rot` (80 x 80) or `proj` (50 Hz, five hidden states)."""

    def __init__(self, kind: str, seed: int = 123):
        rng = np.random.default_rng(seed)
        self.kind = kind
        self.rot = jnp.asarray(rng.standard_normal((80, 80)) / np.sqrt(80), jnp.float32)
        self.proj = jnp.asarray(rng.standard_normal((160, 128)) / np.sqrt(160), jnp.float32)
        self.deep = [jnp.asarray(rng.standard_normal((128, 128)) / np.sqrt(128), jnp.float32) for _ in range(4)]
        super().__init__(f"fbank-{kind}", upstreams.fbank_features, 80 if kind == "rot" else 128)
        if kind == "proj":
            self.frame_rate, self.num_hidden_states = SAMPLE_RATE / 320, 5

    def _forward(self, state, wavs, lengths):
        feats, frames = upstreams.fbank_features(wavs, lengths)
        if self.kind == "rot":
            return (feats @ self.rot)[None], frames
        b, t, d = feats.shape
        pairs = feats[:, : t // 2 * 2].reshape(b, t // 2, 2 * d)
        hidden = [pairs @ self.proj]
        for w in self.deep:
            hidden.append(jnp.tanh(hidden[-1] @ w) * 2.0)
        return jnp.stack(hidden), frames // 2

    def frame_lengths(self, lengths) -> np.ndarray:
        n = super().frame_lengths(lengths)
        return n if self.kind == "rot" else n // 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="pr,sid")
    p.add_argument("--workdir", default="/tmp/probe_invariance")
    p.add_argument("--old", action="store_true", help="the probe settings before the fix")
    args = p.parse_args()
    cfg = load_config_file(os.path.join(ROOT, "configs", "eval", "superb_tiny.py"))
    cfg.tasks_to_run = tuple(args.tasks.split(","))
    if args.old:
        cfg.tasks.pr.update(dict(lr=2e-3, max_steps=1500, eval_every=150, patience=4, min_steps=0))
        for t in ("ks", "sid", "ic", "er"):
            cfg.tasks[t].update(dict(lr=2e-3, max_steps=1500, eval_every=100, patience=4, min_steps=0))
    made = {"fbank": upstreams.fbank(), "fbank-rot": MappedFbank("rot"), "fbank-proj": MappedFbank("proj")}
    original = upstreams.load
    upstreams.load = lambda spec, normalize=None: made[spec] if spec in made else original(spec, normalize)
    evaluate._check_spec = lambda spec: None
    names = list(made)
    runs = {}
    for name in names:
        t0 = time.time()
        runs[name] = evaluate.evaluate_upstream(cfg, name, name, os.path.join(args.workdir, name), args.workdir,
                                                None, log=lambda m: None)
        print(f"{name}: {time.time() - t0:.0f}s", flush=True)
    rows = report.comparison_rows(cfg, names, runs)
    print(f"\nprobe settings: {'before the fix' if args.old else 'configs/eval/superb_tiny.py'}")
    print(f"{'task':<6}{'metric':<14}" + "".join(f"{n:>24}" for n in names))
    for row in rows:
        cells = []
        for n in names:
            c = row["cells"][n]
            mark = {1: " better", -1: " worse", 0: ""}[c.get("better", 0)]
            diff = f" ({100 * c['delta']:+.1f})" if "delta" in c else ""
            cells.append(f"{100 * c['value']:.1f}{diff}{mark}")
        print(f"{row['task']:<6}{row['metric']:<14}" + "".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
