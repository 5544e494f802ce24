"""Gated recurrent unit (Cho et al. 2014), reset gate applied as PyTorch and Flax apply it."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.cells.base import CELLS, Carry, Cell


@CELLS.register("gru")
class GRUCell(Cell):
  """Gate blocks (r, u, n), as torch's (r, z, n):

    r = sigmoid(x W_xr + b_r + h W_hr)          reset gate
    u = sigmoid(x W_xu + b_u + h W_hu)          update gate
    n = σ(x W_xn + b_n + r ⊙ (h W_hn + b_hn))   candidate (σ = `activation`, tanh by default)
    h_t = (1 - u) ⊙ n + u ⊙ h_{t-1}
  """

  def __init__(self, in_features: int, cfg: Any, rngs: nnx.Rngs, carry_norm: bool = False):
    super().__init__(in_features, cfg, rngs, num_gates=3, carry_norm=carry_norm)
    self.b_hn = nnx.Param(jnp.zeros((cfg.hidden_size,), jnp.float32))

  def extra_params(self) -> dict[str, jax.Array]:
    return {"b_hn": self.b_hn[...]}

  def zh_columns(self) -> slice:
    """h W_hn, the candidate's recurrent part, which the reset gate scales."""
    return slice(2 * self.hidden_size, 3 * self.hidden_size)

  def pointwise(self, pw, z, zh_n, carry: Carry):
    (h_prev,) = carry
    size = self.hidden_size
    r = jax.nn.sigmoid(z[..., :size])
    u = jax.nn.sigmoid(z[..., size:2 * size])
    n = self.activation(z[..., 2 * size:] - zh_n + r * (zh_n + pw["b_hn"]))
    h = (1.0 - u) * n + u * h_prev
    return (h,), h
