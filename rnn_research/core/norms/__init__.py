"""Normalisation placements of the lecture's section 2.1.3 (`config.model.norm`).

| norm | where | statistics | file |
| --- | --- | --- | --- |
| `layer` (Fig 13.7) | between layers | one example's whole sequence, (time, features) | sequence_layer.py |
| `mini_layer` (Fig 13.8) | between layers | one vector, features, per step | features.py |
| `mini_vertical` (Fig 13.10) | the carry into the next step | one vector, features, per step | features.py, cells/base.py |
| `vertical` (Fig 13.11) | the carries, across layers | L vectors at one step, per feature | vertical.py |
| `batch` | between layers | valid (batch, time) positions, per feature | batch.py |
| `batch_per_step` (Cooijmans et al. 2016) | x W_x and h W_h inside the step | valid batch rows at each step t, per feature | batch_per_step.py |
| `layer_per_step` (Ba et al. 2016) | x W_x and h W_h inside the step (lstm: and c_t) | one row at one step, over its G*H features | layer_per_step.py |
"""
from __future__ import annotations

from flax import nnx

from rnn_research.core.choices import EvalNormStats
from rnn_research.core.norms.batch import MaskedBatchNorm
from rnn_research.core.norms.batch_per_step import StepBatchNorm
from rnn_research.core.norms.features import MiniLayerNorm, normalize_features
from rnn_research.core.norms.layer_per_step import StepLayerNorm
from rnn_research.core.norms.sequence_layer import SequenceLayerNorm
from rnn_research.core.norms.vertical import VerticalNorm


def between_layers(norm: str, width: int, *, eps: float, momentum: float,
                   eval_stats: EvalNormStats = "running") -> nnx.Module:
  """The vertical-path norm module `norm` (one of `choices.BETWEEN_LAYER_NORMS`) of width H."""
  if norm == "layer":
    return SequenceLayerNorm(width, eps, momentum, eval_stats)
  if norm == "batch":
    return MaskedBatchNorm(width, eps, momentum)
  return MiniLayerNorm(width, eps)


__all__ = ["MaskedBatchNorm", "MiniLayerNorm", "SequenceLayerNorm", "StepBatchNorm",
           "StepLayerNorm",
           "VerticalNorm", "between_layers", "normalize_features"]
