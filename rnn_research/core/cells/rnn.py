"""The vanilla RNN of eq. 13.1 and its MLP-filter form (lecture 1.2, Fig 13.3)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core.cells.base import CELLS, Carry, Cell
from rnn_research.core.initializers import input_init

TRANSITIONS = ("linear", "mlp")


@CELLS.register("rnn")
class RNNCell(Cell):
  """h_t = σ(W_h h_{t-1} + W_x x_t + b), h_0 = 0  (eq. 13.1; we index the input x_t).

  With `transition='mlp'` the filter is a one-hidden-layer MLP of [h_{t-1}, x_t]:
    a_t = σ(W_h h_{t-1} + W_x x_t + b)   [B, M]   (M = mlp_hidden)
    h_t = σ(a_t W_2 + b_2)               [B, H]
  """

  def __init__(self, in_features: int, cfg: Any, rngs: nnx.Rngs, carry_norm: bool = False):
    if cfg.transition not in TRANSITIONS:
      raise ValueError(f"unknown transition {cfg.transition!r}; valid choices: "
                       f"{', '.join(TRANSITIONS)}")
    self.mlp = cfg.transition == "mlp"
    self.tanh = cfg.activation == "tanh"  # the analytic backward knows tanh' = 1 - h^2
    super().__init__(in_features, cfg, rngs, num_gates=1,
                     gate_width=cfg.mlp_hidden if self.mlp else None, carry_norm=carry_norm)
    if self.mlp:
      self.w_2 = nnx.Param(input_init(rngs.params(), (cfg.mlp_hidden, cfg.hidden_size)))
      self.b_2 = nnx.Param(jnp.zeros((cfg.hidden_size,)))

  def extra_params(self) -> dict[str, jax.Array]:
    return {"w_2": self.w_2[...], "b_2": self.b_2[...]} if self.mlp else {}

  def pointwise(self, pw, z, zh, carry: Carry):
    h = self.activation(z)
    if self.mlp:
      h = self.activation(h @ pw["w_2"] + pw["b_2"])
    return (h,), h

  def analytic_backward(self) -> bool:
    """Whether `pointwise_saving`/`pointwise_backward` may stand in for autodiff of the step
    (`rnn_research.core.vjp`): the linear tanh cell, no in-step axis around it."""
    return not self.mlp and self.tanh and self.skip == "none" and self.carry_norm_eps is None

  def pointwise_saving(self, pw, z, zh, carry: Carry):
    """`pointwise` of the linear tanh cell, also returning what its backward reads: (h_t,)."""
    h = jnp.tanh(z)
    return (h,), h, (h,)

  def pointwise_backward(self, saved, carry: Carry, dcarry: Carry):
    """dL/dh_t -> (d pw, dz = dh_t (1 - h_t^2), None (d(h W_h) is the same), 0 but W_h's path)."""
    (h,), (dh,) = saved, dcarry
    return {}, dh * (1.0 - h * h), None, (jnp.zeros_like(dh),)
