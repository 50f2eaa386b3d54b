"""Registry entry for `objective.name = "vq_wav2vec"`: the objective lives beside wav2vec in
objectives/wav2vec.py (the registry imports the module named after the objective)."""

from ssl_jax.objectives.wav2vec import VqWav2VecObjective

__all__ = ["VqWav2VecObjective"]
