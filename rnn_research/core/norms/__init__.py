"""Normalisation placements of the lecture's section 2.1.3 (`config.model.norm`).

| norm | where | statistics | file |
| --- | --- | --- | --- |
| `layer` (Fig 13.7) | between layers | one example's whole sequence, (time, features) | sequence_layer.py |
| `mini_layer` (Fig 13.8) | between layers | one vector, features, per step | features.py |
| `mini_vertical` (Fig 13.10) | the carry into the next step | one vector, features, per step | features.py, cells/base.py |
| `vertical` (Fig 13.11) | the carries, across layers | L vectors at one step, per feature | vertical.py |
| `batch` | between layers | valid (batch, time) positions, per feature | batch.py |
| `batch_per_step` (Cooijmans et al. 2016) | x W_x and h W_h inside the step | valid batch rows at each step t, per feature | batch_per_step.py |
"""
from __future__ import annotations

from typing import Any

from flax import nnx

from rnn_research.core.norms.batch import MaskedBatchNorm
from rnn_research.core.norms.batch_per_step import StepBatchNorm
from rnn_research.core.norms.features import MiniLayerNorm, normalize_features
from rnn_research.core.norms.sequence_layer import EVAL_NORM_STATS, SequenceLayerNorm
from rnn_research.core.norms.vertical import VerticalNorm

NORMS = ("none", "layer", "mini_layer", "mini_vertical", "vertical", "batch", "batch_per_step")
BETWEEN_LAYERS = ("layer", "mini_layer", "batch")


def norm_layers(spec: str, num_layers: int) -> tuple[int, ...]:
  """`config.model.norm_layers`: 'all' or comma-separated layer indices, e.g. '0,2'."""
  if spec == "all":
    return tuple(range(num_layers))
  try:
    layers = tuple(sorted({int(part) for part in spec.split(",")}))
  except ValueError:
    layers = ()
  if not layers or any(not 0 <= l < num_layers for l in layers):
    raise ValueError(f"norm_layers must be 'all' or comma-separated layer indices in "
                     f"[0, {num_layers - 1}], got {spec!r}")
  return layers


def between_layers(cfg: Any, width: int) -> nnx.Module:
  """The vertical-path norm module of `cfg.norm` (one of BETWEEN_LAYERS)."""
  if cfg.norm == "layer":
    return SequenceLayerNorm(width, cfg.norm_eps, cfg.norm_momentum, cfg.eval_norm_stats)
  if cfg.norm == "batch":
    return MaskedBatchNorm(width, cfg.norm_eps, cfg.norm_momentum)
  return MiniLayerNorm(width, cfg.norm_eps)


__all__ = ["BETWEEN_LAYERS", "EVAL_NORM_STATS", "NORMS", "MaskedBatchNorm", "MiniLayerNorm",
           "SequenceLayerNorm", "StepBatchNorm", "VerticalNorm", "between_layers", "norm_layers",
           "normalize_features"]
