"""The per-step readout: top layer's h_t [.., H] -> y_t [.., O]."""
from __future__ import annotations

import jax
from flax import nnx

from rnn_research.core.activations import Activation
from rnn_research.core.choices import ReadoutKind


class Readout(nnx.Module):
  """`linear`: y = h W + b.  `mlp`: y = σ(h W_1 + b_1) W_2 + b_2 with `hidden` units."""

  def __init__(self, kind: ReadoutKind, in_features: int, out_features: int, hidden: int,
               activation: Activation, rngs: nnx.Rngs):
    self.activation = activation
    self.hidden = nnx.Linear(in_features, hidden, rngs=rngs) if kind == "mlp" else None
    self.out = nnx.Linear(hidden if kind == "mlp" else in_features, out_features, rngs=rngs)

  def __call__(self, h: jax.Array) -> jax.Array:
    if self.hidden is not None:
      h = self.activation(self.hidden(h))
    return self.out(h)
