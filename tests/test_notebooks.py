"""The notebooks in notebooks/: committed without outputs, each opening with a Colab badge, and
executed top to bottom on the session's tiny corpora with small sizes (set in a cell injected
after each notebook's `parameters` cell, as papermill does)."""

import glob
import os
import time

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
LIMIT_SECONDS = 300  # per notebook: the whole run, not one cell
SHORT_CROPS = "--config.data.max_seconds=1.0 --config.data.min_seconds=0.5 --config.data.num_buckets=1"


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def test_every_notebook_is_committed_clean_and_opens_with_a_badge():
    assert {_name(p) for p in NOTEBOOKS} >= {"quickstart", "hubert_iterations", "load_released_checkpoint"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        first = nb.cells[0]
        assert first.cell_type == "markdown" and "colab-badge.svg" in first.source, path
        assert f"notebooks/{os.path.basename(path)}" in first.source, path
        code = [c for c in nb.cells if c.cell_type == "code"]
        dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
        assert not dirty, f"{path}: code cells {dirty} hold outputs; strip them before committing"
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1, path


def inject(nb, values: dict) -> None:
    """Puts a cell assigning `values` right after the cell tagged `parameters`."""
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    names = set()
    for line in nb.cells[index].source.splitlines():
        if "=" in line and not line.startswith((" ", "#")):
            names.add(line.split("=")[0].strip())
    unknown = set(values) - names
    assert not unknown, f"not parameters of this notebook: {sorted(unknown)} (it has {sorted(names)})"
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


def execute(name: str, values: dict) -> nbformat.NotebookNode:
    """Runs the notebook in a fresh kernel (one CPU device, as a user's machine) within
    LIMIT_SECONDS; returns it with outputs."""
    from nbclient import NotebookClient

    path = os.path.join(ROOT, "notebooks", f"{name}.ipynb")
    nb = nbformat.read(path, as_version=4)
    inject(nb, values)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as in Jupyter
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
    client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}})
    deadline = time.monotonic() + LIMIT_SECONDS
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            client.timeout = max(1, int(deadline - time.monotonic()))
            client.execute_cell(cell, index)
    if os.environ.get("SSL_JAX_NOTEBOOK_OUT"):  # keep the executed notebook to look at
        nbformat.write(nb, os.path.join(os.environ["SSL_JAX_NOTEBOOK_OUT"], os.path.basename(path)))
    return nb


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_quickstart(tiny_corpus, tiny_eval_corpus, tmp_path):
    nb = execute("quickstart", dict(
        TRAIN_STEPS=4, EVAL_EVERY=0, CORPUS_HOURS=0.05, CORPUS_DIR=tiny_corpus, EVAL_CORPUS_DIR=tiny_eval_corpus,
        EVAL_CONFIG="configs/eval/superb_tiny.py:smoke", ABX_SPEAKERS=0, TRAIN_OVERRIDES=SHORT_CROPS,
        WORKDIR=str(tmp_path)))
    assert images(nb) == 4  # curves, KS and SID bars, layer weights, frames beside the spectrogram
    assert "(layers, frames, dim)" in text(nb)
    assert os.path.exists(tmp_path / "eval" / "comparison.json")


def test_hubert_iterations(tiny_corpus, tmp_path):
    nb = execute("hubert_iterations", dict(
        CORPUS_HOURS=0.05, CORPUS_DIR=tiny_corpus, CLUSTERS=12, KMEANS_STEPS=4, KMEANS_POINTS=512,
        TRAIN_STEPS=3, TRAIN_OVERRIDES=SHORT_CROPS, WORKDIR=str(tmp_path)))
    assert images(nb) == 3  # loss and accuracy, PNMI bars, co-occurrence maps
    assert "iteration 2 (layer 2)" in text(nb)


@pytest.mark.torch
def test_load_released_checkpoint(tmp_path):
    pytest.importorskip("transformers")
    nb = execute("load_released_checkpoint", dict(
        HIDDEN=32, LAYERS=2, HEADS=2, FFN=48, CONV_DIM=16, WORKDIR=str(tmp_path)))
    assert images(nb) == 1
    assert "worst layer difference" in text(nb)


def test_run_streams_a_commands_output_and_raises_when_it_fails(tmp_path, capsys):
    from ssl_jax.notebook import run

    (tmp_path / "ok.json").write_text('{"a": "é"}')
    run(f"json.tool {tmp_path / 'ok.json'}")
    assert '"a": "\\u00e9"' in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="failed with exit status"):
        run(f"json.tool {tmp_path / 'missing.json'}")
    assert "No such file" in capsys.readouterr().out
