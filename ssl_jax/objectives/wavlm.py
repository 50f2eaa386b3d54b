"""WavLM: HuBERT's masked prediction as denoising (Chen et al., 2022, "WavLM", Sec. III).

The objective is `hubert`'s; what makes it WavLM lives in the config and is checked here: the
input crops are augmented (utterance mixing, `data.augment.mix`, and optionally noise), the
targets come from the clean primary crop (`data.augment.clean_copy`), and the Transformer has
the gated relative position bias (`model.relative_position_buckets`).
"""

from __future__ import annotations

from typing import Any

from ssl_jax.objectives import register
from ssl_jax.objectives.hubert import HubertObjective


@register("wavlm")
class WavLMObjective(HubertObjective):
    """HuBERT with the WavLM checks (module docstring)."""

    def __init__(self, config: Any):
        super().__init__(config)
        if self.encoder_config.relative_position_buckets <= 0:
            raise ValueError("WavLM needs the gated relative position bias: set model.relative_position_buckets (320)")
        augment = config["data"]["augment"] if "augment" in config["data"] else None
        if augment is None or not augment["clean_copy"]:
            raise ValueError("WavLM predicts the clean utterance's targets: set data.augment.clean_copy=True")
