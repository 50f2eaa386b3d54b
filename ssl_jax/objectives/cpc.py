"""Contrastive Predictive Coding, in the modified form SUPERB evaluates (van den Oord et al.,
2018, "Representation Learning with Contrastive Predictive Coding"; Rivière et al., 2020,
"Unsupervised pretraining transfers well across languages").

A strided conv encoder turns the waveform into 100 Hz frames z_t (the frame encoder's `conv`
front end and its projection, hidden state 0) and a one-layer LSTM reads them into contexts
c_t (the last hidden state). For k = 1..K a step-specific linear map W_k predicts z_{t+k} from
c_t; the loss is InfoNCE over the positive and N distractors drawn from the valid frames of the
same utterance (objectives/future.py), averaged over the (t, k) pairs with t + k inside the
utterance. Deviations: the predictor is the original CPC's per-step linear map (modified CPC
uses a one-layer Transformer over the contexts); distractors come from the same utterance
rather than from other windows of the same speaker; the encoder's output goes through the
frame encoder's linear projection before the context network.
"""

from __future__ import annotations

from ssl_jax.objectives import register
from ssl_jax.objectives.future import FuturePredictionObjective, infonce


@register("cpc")
class CpcObjective(FuturePredictionObjective):
    """CPC from the full config (`model.*` of the frames architecture with a causal body;
    `objective.prediction_steps` K, `objective.num_negatives` N).

    Params: `{"encoder", "predictor"}` (W_k without bias, CPC's log-bilinear score z^T W_k c).
    """

    NAME = "cpc"
    SCORE_LOSS = staticmethod(infonce)
    PREDICTOR_BIAS = False
    SUMMARY = {"accuracy": "CPC accuracy (positive first)"}
