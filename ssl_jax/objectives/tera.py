"""TERA (Liu, Li & Lee, 2021, "TERA: Self-Supervised Learning of Transformer Encoder
Representation for Speech", IEEE/ACM TASLP 29).

Transformer encoder representations from alteration: unstacked log-mel frames (100 Hz,
per-utterance CMVN) altered along time (spans of 7 frames covering about 15% of the frames,
80/10/10 zeroed / replaced / kept), frequency (a band of up to 20% of the mel bins zeroed over
the whole utterance) and magnitude (Gaussian noise on a share of the utterances), and the
prediction head reconstructs the original frames under an L1 loss over the time-altered frames
and the frequency-masked bins (objectives/reconstruction.py).

Deviations: the frame encoder's conv positional embedding instead of sinusoids; the 80/10/10
choice is drawn per span; noise is drawn per utterance (the authors' implementation draws it
once per batch).
"""

from ssl_jax.objectives import register
from ssl_jax.objectives.reconstruction import AlteredReconstruction


@register("tera")
class Tera(AlteredReconstruction):
    """Time, frequency and magnitude alteration of log-mel frames; `objective.*` as
    `AlteredReconstruction`."""
