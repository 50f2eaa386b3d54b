"""Mockingjay (Liu, Yang, Chi, Hsu & Lee, 2020, "Mockingjay: Unsupervised Speech Representation
Learning with Deep Bidirectional Transformer Encoders", ICASSP).

The masked acoustic model: log-mel frames (per-utterance CMVN) stacked a few at a time
(`model.logmel_stack`, 3 in the paper), a bidirectional Transformer (`model.body =
"transformer"`), about 15% of the stacked frames chosen in spans, each span zeroed (80%),
replaced by other frames of the utterance (10%) or left as it is (10%), and the chosen stacked
frames reconstructed by the prediction head under an L1 loss (objectives/reconstruction.py).

Deviations: the frame encoder's conv positional embedding instead of sinusoids; spans count
stacked frames (the recipes' 2 stacked frames = 60 ms stand for spans of 7 frames of 10 ms);
the 80/10/10 choice is drawn per span.
"""

from ssl_jax.objectives import register
from ssl_jax.objectives.reconstruction import AlteredReconstruction


@register("mockingjay")
class Mockingjay(AlteredReconstruction):
    """Time alteration of stacked log-mel frames; `objective.*` as `AlteredReconstruction`
    (frequency and magnitude alterations off unless a config sets them)."""
