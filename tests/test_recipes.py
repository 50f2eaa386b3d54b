"""Every training recipe has the config fields of DESIGN.md and builds its objective."""

import glob
import os

import pytest

from ssl_jax import objectives
from ssl_jax.training.config_check import load_config_file
from tests.helpers import ROOT

FIELDS = ("seed", "data.path", "data.augment", "data.max_seconds", "train.steps", "train.batch_size",
          "train.log_every", "train.checkpoint_every", "train.init_from", "optim.lr", "mesh.data", "mesh.fsdp",
          "mesh.tensor", "model.frontend", "objective.name")
ARGS = {"w2v2_large.py": ("lv60k", "ls960"), "hubert_base.py": ("iter1", "iter2"), "hubert_tiny.py": ("iter1", "iter2"),
        "atst_tiny.py": ("", "clip")}
RECIPES = [f"{os.path.basename(p)}:{a}" if a else os.path.basename(p)
           for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
           if not os.path.basename(p).startswith("finetune")
           for a in ARGS.get(os.path.basename(p), ("",))]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_has_the_contract_fields_and_builds(recipe):
    c = load_config_file(os.path.join(ROOT, "configs", recipe))
    for dotted in FIELDS:
        node = c
        for part in dotted.split("."):
            assert part in node, f"{recipe} lacks {dotted}"
            node = node[part]
    objectives.build(c)


def test_all_family_recipes_are_found():
    names = {r.split(":")[0] for r in RECIPES}
    assert {"hubert_tiny.py", "wavlm_tiny.py", "bestrq_tiny.py", "discrete_bert_tiny.py", "w2v2_tiny.py"} <= names
    assert {"data2vec_tiny.py", "data2vec2_tiny.py", "byola_tiny.py", "m2d_tiny.py", "atst_tiny.py"} <= names
