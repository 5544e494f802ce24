"""The fixed choice lists of `config.model`, as `Literal` types, and the one check of a choice.

Extensible choices (cells, activations, recurrent initialisers, LSTM variants) are registries
(`registry.Registry`); the lists here are closed: adding one means adding code that handles it.
"""
from __future__ import annotations

from typing import Literal, get_args

Transition = Literal["linear", "mlp"]
ReadoutKind = Literal["linear", "mlp"]
Norm = Literal["none", "layer", "mini_layer", "mini_vertical", "vertical", "batch",
               "batch_per_step", "layer_per_step"]
EvalNormStats = Literal["running", "sequence"]
VerticalSkip = Literal["none", "residual", "dense"]
HorizontalSkip = Literal["none", "residual", "learned"]
Bidirectional = Literal["none", "concat", "sum"]
Engine = Literal["auto", "scan", "scan_hoisted", "vjp", "vjp_hoisted", "associative", "cudnn"]
Execution = Literal["layer_major", "time_major"]
Dtype = Literal["float32", "bfloat16", "float16"]

BETWEEN_LAYER_NORMS = ("layer", "mini_layer", "batch")  # norms of h^(l) on its way up


def valid(kind: object) -> tuple[str, ...]:
  """The values of a `Literal` type, in order."""
  return get_args(kind)


def check(key: str, value: str, kind: object) -> None:
  """ValueError naming `key` and every valid choice unless `value` is one of `kind`'s."""
  if value not in valid(kind):
    raise ValueError(f"unknown {key} {value!r}; valid choices: {', '.join(valid(kind))}")
