"""wav2vec 2.0 BASE pretraining step: ssl_jax against transformers' Wav2Vec2ForPreTraining.

  python benchmarks/bench_w2v2.py [--batch=4 --seconds=8 --json]

Same as `python -m ssl_jax.bench --config=configs/w2v2_base.py --compare=torch`: step time,
audio-seconds/s, achieved FLOP/s against the matmul peak measured in the same run, and the
speed ratio against the PyTorch reference on the same shapes, masks and distractors.
"""

import os
import sys

from absl import app

from ssl_jax import bench

if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = list(sys.argv)
    if not any(a.startswith("--config") for a in argv[1:]):
        argv.append(f"--config={os.path.join(root, 'configs', 'w2v2_base.py')}")
    if not any(a.startswith("--compare") for a in argv[1:]):
        argv.append("--compare=torch")
    app.run(bench.main, argv=argv)
