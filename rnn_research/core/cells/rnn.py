"""The vanilla RNN of eq. 13.1 and its MLP-filter form (lecture 1.2, Fig 13.3)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core.carry import Carry
from rnn_research.core.cells.base import CELLS, Cell
from rnn_research.core.choices import Transition
from rnn_research.core.initializers import input_init


@CELLS.register("rnn")
class RNNCell(Cell):
  """h_t = σ(W_h h_{t-1} + W_x x_t + b), h_0 = 0  (eq. 13.1; we index the input x_t).

  With `transition='mlp'` the filter is a one-hidden-layer MLP of [h_{t-1}, x_t]:
    a_t = σ(W_h h_{t-1} + W_x x_t + b)   [B, M]   (M = mlp_hidden)
    h_t = σ(a_t W_2 + b_2)               [B, H]
  """

  spec_args = {"transition": "transition", "mlp_hidden": "mlp_hidden"}

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs,
               transition: Transition = "linear", mlp_hidden: int = 64, **common: Any):
    """`common`: the arguments every cell takes (`Cell`)."""
    self.mlp = transition == "mlp"
    super().__init__(in_features, hidden_size, rngs=rngs, num_gates=1,
                     gate_width=mlp_hidden if self.mlp else None, **common)
    if self.mlp:
      self.w_2 = nnx.Param(input_init(rngs.params(), (mlp_hidden, hidden_size)))
      self.b_2 = nnx.Param(jnp.zeros((hidden_size,)))

  def extra_params(self) -> dict[str, jax.Array]:
    return {"w_2": self.w_2[...], "b_2": self.b_2[...]} if self.mlp else {}

  def pointwise(self, pw, z, zh, carry: Carry):
    h = self.activation(z)
    if self.mlp:
      h = self.activation(h @ pw["w_2"] + pw["b_2"])
    return Carry(h), h

  def analytic_backward(self) -> bool:
    """Whether `pointwise_saving`/`pointwise_backward` may stand in for autodiff of the step
    (`core/vjp.py`): the linear tanh cell, no in-step axis around it."""
    return not self.mlp and self.plain()

  def pointwise_saving(self, pw, z, zh, carry: Carry):
    """`pointwise` of the linear tanh cell, also returning what its backward reads: h_t."""
    h = jnp.tanh(z)
    return Carry(h), h, h

  def pointwise_backward(self, saved, carry: Carry, dcarry: Carry):
    """dL/dh_t -> (d pw, dz = dh_t (1 - h_t^2), None (d(h W_h) is the same), 0 but W_h's path)."""
    h, dh = saved, dcarry.h
    return {}, dh * (1.0 - h * h), None, Carry(jnp.zeros_like(dh))
