"""A cheap probe of representation quality during pretraining: across-speaker word ABX.

At every eval the trainer encodes a small fixed set of isolated words (the `abx_words` split of
the evaluation corpus: minimal-pair English words spoken by held-out evaluation voices that no
pretraining speaker uses) with the current encoder weights, and scores every layer with
`ssl_jax.downstream.abx` (DTW over angular frame distances, across speakers). It reports the
error of the layer chosen on the dev half of the words, scored on the test half, as
`evaluate`'s `abx` task does, plus every layer's error over all triplets. A loss or a
contrastive accuracy can improve while features get worse; this number moves with the
features.

Config (`train.abx_probe`): `speakers` (0 = off; the first N of the split's speakers, all their
words), `triplets` (triplet budget), `seed` (the evaluation corpus' seed; also drives the word
split and the triplets, so every eval of a run scores the same triplets).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from ssl_jax.downstream import abx
from ssl_jax.upstream import Upstream

SPLIT = "abx_words"


class AbxProbe:
    """`probe(encoder_params) -> {"abx_word": error, "abx_layer": layer, "abx_word_l{k}": ...}`.

    The clips are read once; the encoder's programs are compiled on the first call and reused
    with each new set of weights.
    """

    def __init__(self, model_config: Any, *, speakers: int, triplets: int, seed: int = 0,
                 normalize: bool = False, shard_dir: str | None = None):
        """Args:
          model_config: the `model` section of the training config.
          speakers: how many of the split's speakers (in sorted order) to use; at least 2.
          triplets: the triplet budget, shared between the dev and test halves of the words.
          seed: the evaluation corpus' seed (the corpus is built once into the cache), the
            word split and the triplets.
          normalize: per-utterance waveform normalisation, as the training data has it.
          shard_dir: a folder holding an `abx_words` split (default: the embedded one).
        """
        from ssl_jax.data import synth
        from ssl_jax.data.shards import ShardSource

        if speakers < 2:
            raise ValueError(f"train.abx_probe.speakers must be 0 (off) or at least 2, got {speakers}")
        if triplets < 10:
            raise ValueError(f"train.abx_probe.triplets must be at least 10, got {triplets}")
        path = shard_dir or synth.ensure_eval_abx_words(seed=seed)
        source = ShardSource(path, SPLIT)
        items = abx.word_items(source.manifest)
        names = sorted({it.speaker for it in items})
        if len(names) < speakers:
            raise ValueError(f"{path} split {SPLIT!r} has {len(names)} speakers; train.abx_probe.speakers={speakers}")
        keep = set(names[:speakers])
        items = [it for it in items if it.speaker in keep]
        utts = sorted({it.utt for it in items})
        local = {u: k for k, u in enumerate(utts)}
        self.items = [abx.Item(local[it.utt], it.start, it.end, it.label, it.context, it.speaker) for it in items]
        self.wavs = [np.asarray(source[u]["audio"], np.float32) for u in utts]
        self.model_config = model_config
        self.triplets, self.seed, self.normalize = int(triplets), int(seed), bool(normalize)
        self._upstream: Upstream | None = None

    def __call__(self, encoder_params: Any) -> dict[str, float]:
        t0 = time.time()
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            encoder_params = multihost_utils.process_allgather(encoder_params, tiled=True)
        params = jax.device_get(encoder_params)
        if self._upstream is None:
            self._upstream = Upstream(params, self.model_config, normalize=self.normalize, name="probe")
        else:
            self._upstream.set_state(params)
        up = self._upstream
        features = up.embed(self.wavs, batch_size=16)
        result = abx.evaluate_abx(features, up.frame_rate, self.items, max_triplets=self.triplets,
                                  seed=self.seed, num_resamples=100, log=lambda _: None)
        out = {"abx_word": result.error, "abx_layer": float(result.layer)}
        out.update({f"abx_word_l{k}": float(e) for k, e in enumerate(result.layer_errors)})
        out["abx_seconds"] = time.time() - t0
        return out


def from_config(config: Any) -> AbxProbe | None:
    """The probe `train.abx_probe` asks for, or None when it is off (or absent)."""
    section = config.train.get("abx_probe") if hasattr(config.train, "get") else None
    if section is None or int(section.get("speakers", 0)) == 0:
        return None
    return AbxProbe(config.model, speakers=int(section.speakers), triplets=int(section.get("triplets", 4000)),
                    seed=int(section.get("seed", 0)), normalize=bool(config.data.normalize),
                    shard_dir=section.get("path") or None)
