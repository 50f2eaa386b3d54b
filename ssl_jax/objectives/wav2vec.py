"""wav2vec (Schneider et al., 2019, "wav2vec: Unsupervised Pre-training for Speech Recognition")
and vq-wav2vec with the Gumbel-softmax quantiser (Baevski et al., 2020, "vq-wav2vec:
Self-Supervised Learning of Discrete Speech Representations", ICLR).

wav2vec: a strided conv encoder gives 100 Hz frames z_i (hidden state 0 of the frame encoder)
and a causal conv context network gives c_i (the last hidden state). For k = 1..K an affine
step h_k(c_i) = W_k c_i + b_k scores z_{i+k} against N distractors drawn uniformly from the
valid frames of the same utterance (objectives/future.py), with the binary loss
  -log sigmoid(z_{i+k} . h_k(c_i)) - sum_n log sigmoid(-z~_n . h_k(c_i)),
averaged over the (i, k) pairs with i + k inside the utterance. The paper writes the second
term as lambda times an expectation over the N samples with lambda = N, which is this sum
(fairseq's default, without `balanced_classes`).

vq-wav2vec: the same with a Gumbel-softmax product quantiser (G groups of V entries, one
entry per group, straight-through) between encoder and context network (`model.vq_layer = 0`);
the quantised vectors are both the context network's input and the targets. The temperature
falls linearly from 2 to 0.5 over the first 70% of updates, then stays (the paper's). The
Gumbel model has no diversity loss (fairseq's Gumbel recipe adds none). `codes` gives the hard
codes a Discrete BERT reads.

Deviations: step k predicts the frame k ahead, k = 1..K (fairseq's recipe offsets every step
by the encoder's receptive field in frames, 465 samples / 160 = 3, and so predicts 3..K+2
frames ahead); the accuracy metric is the ranking one of CPC (positive
above every distractor), not fairseq's per-logit sign accuracy; a distractor that quantises to
the positive's code is kept, as in fairseq's wav2vec.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import frame_encoder
from ssl_jax.objectives import register
from ssl_jax.objectives.future import FuturePredictionObjective, binary_contrastive


def linear_anneal(schedule: tuple[float, float, float], total_steps: int, step: Any) -> jax.Array:
    """start + (end - start) * min(step / (fraction * total_steps), 1) for `schedule` = (start, end, fraction)."""
    start, end, fraction = schedule
    span = max(float(fraction) * total_steps, 1.0)
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / span, 0.0, 1.0)
    return start + (end - start) * progress


@register("wav2vec")
class Wav2VecObjective(FuturePredictionObjective):
    """wav2vec from the full config (`model.*` of the frames architecture with a causal body;
    `objective.prediction_steps` K, `objective.num_negatives` N).

    Params: `{"encoder", "predictor"}` (h_k with bias).
    """

    NAME = "wav2vec"
    SCORE_LOSS = staticmethod(binary_contrastive)
    PREDICTOR_BIAS = True
    SUMMARY = {"accuracy": "wav2vec accuracy (positive first)"}

    def __init__(self, config: Any):
        super().__init__(config)
        if self.encoder_config.vq_layer >= 0:
            raise ValueError("wav2vec has no quantiser (model.vq_layer=-1); vq-wav2vec is objective 'vq_wav2vec'")


@register("vq_wav2vec")
class VqWav2VecObjective(FuturePredictionObjective):
    """vq-wav2vec (Gumbel) from the full config: as wav2vec, with `model.vq_layer = 0`,
    `model.vq_groups` G, `model.vq_codes` V and `objective.gumbel_temperature` = (start, end,
    fraction of `train.steps` over which it falls linearly).

    Params: `{"encoder" (with the quantiser), "predictor"}`.
    """

    NAME = "vq_wav2vec"
    SCORE_LOSS = staticmethod(binary_contrastive)
    PREDICTOR_BIAS = True
    SUMMARY = {"accuracy": "vq-wav2vec accuracy (positive first)", "vq_perplexity": "code perplexity"}

    def __init__(self, config: Any):
        super().__init__(config)
        if self.encoder_config.vq_layer != 0:
            raise ValueError(f"vq-wav2vec quantises the encoder's output: model.vq_layer must be 0, "
                             f"got {self.encoder_config.vq_layer}")
        schedule = tuple(float(v) for v in config["objective"]["gumbel_temperature"])
        if len(schedule) != 3 or min(schedule[:2]) <= 0 or not 0.0 <= schedule[2] <= 1.0:
            raise ValueError(f"objective.gumbel_temperature is (start > 0, end > 0, fraction of train.steps in "
                             f"[0, 1]), got {schedule}")
        self.gumbel = schedule
        self.total_steps = int(config["train"]["steps"])
        # Collapse: about one code per group in use.
        self.floors = {**self.floors, "vq_perplexity": 2.0 * self.encoder_config.vq_groups}

    def vq_temperature(self, step: Any) -> jax.Array:
        return linear_anneal(self.gumbel, self.total_steps, step)

    def extra_metrics(self, sown: dict, step: Any) -> dict:
        """vq_perplexity (of the soft code distribution over the valid frames, summed over groups) and gumbel_temperature."""
        return {"vq_perplexity": sown[frame_encoder.VQ_COLLECTION]["vq_perplexity"][0],
                "gumbel_temperature": self.vq_temperature(step)}

    def codes(self, params: Any, wavs: jax.Array, audio_mask: jax.Array) -> jax.Array:
        """Hard codes of every frame (the argmax entry of each group, as the deterministic quantiser picks).

        Args:
          params: the objective's parameters (`{"encoder", ...}`).
          wavs: f32[batch, samples] 16 kHz audio; audio_mask: bool[batch, samples] (a prefix).
        Returns:
          int32[batch, frames, G] in [0, V) on valid frames, -1 on padding frames.
        """
        out, captured = self.encoder.apply(
            {"params": params["encoder"]}, wavs, audio_mask, deterministic=True,
            capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Dense) and mdl.name == "weight_proj",
            mutable=["intermediates"])
        logits = captured["intermediates"]["quantizer"]["weight_proj"]["__call__"][0]
        cfg = self.encoder_config
        codes = jnp.argmax(logits.reshape(*logits.shape[:2], cfg.vq_groups, cfg.vq_codes), axis=-1).astype(jnp.int32)
        return jnp.where(out.frame_mask[..., None], codes, -1)
