"""Gated recurrent unit (Cho et al. 2014), reset gate applied as PyTorch and Flax apply it."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core.carry import Carry
from rnn_research.core.cells.base import CELLS, Cell


@CELLS.register("gru")
class GRUCell(Cell):
  """Gate blocks (r, u, n), as torch's (r, z, n):

    r = sigmoid(x W_xr + b_r + h W_hr)          reset gate
    u = sigmoid(x W_xu + b_u + h W_hu)          update gate
    n = σ(x W_xn + b_n + r ⊙ (h W_hn + b_hn))   candidate (σ = `activation`, tanh by default)
    h_t = (1 - u) ⊙ n + u ⊙ h_{t-1}
  """

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, **common: Any):
    """`common`: the arguments every cell takes (`Cell`)."""
    super().__init__(in_features, hidden_size, rngs=rngs, num_gates=3, **common)
    self.b_hn = nnx.Param(jnp.zeros((hidden_size,), jnp.float32))

  def extra_params(self) -> dict[str, jax.Array]:
    return {"b_hn": self.b_hn[...]}

  def pointwise_columns(self) -> slice:
    """h W_hn, the candidate's recurrent part, which the reset gate scales."""
    return slice(2 * self.hidden_size, 3 * self.hidden_size)

  def pointwise(self, pw, z, zh_n, carry: Carry):
    h_prev, size = carry.h, self.hidden_size
    r = jax.nn.sigmoid(z[..., :size])
    u = jax.nn.sigmoid(z[..., size:2 * size])
    n = self.activation(z[..., 2 * size:] - zh_n + r * (zh_n + pw["b_hn"]))
    h = (1.0 - u) * n + u * h_prev
    return Carry(h), h

  def analytic_backward(self) -> bool:
    """Whether `pointwise_saving`/`pointwise_backward` may stand in for autodiff of the step
    (`core/vjp.py`): the plain cell with tanh, no in-step axis around it."""
    return self.plain()

  def pointwise_saving(self, pw, z, zh_n, carry: Carry):
    """`pointwise`, also returning what its backward reads: (r, u, n, h W_hn + b_hn)."""
    h_prev, size = carry.h, self.hidden_size
    r = jax.nn.sigmoid(z[..., :size])
    u = jax.nn.sigmoid(z[..., size:2 * size])
    e = zh_n + pw["b_hn"]
    n = jnp.tanh(z[..., 2 * size:] - zh_n + r * e)
    h = (1.0 - u) * n + u * h_prev
    return Carry(h), h, (r, u, n, e)

  def pointwise_backward(self, saved, carry: Carry, dcarry: Carry):
    """dL/dh_t (dcarry = (dh,)) -> (d pw, d(x W_x + b) [B, 3H], d(h W_h) [B, 3H],
    d carry_{t-1} but the W_h path), from the saved gates (the gradients of x W_x and h W_h
    differ in the n block only):

      dn* = dh (1 - u)(1 - n^2)       (n* the candidate's pre-activation)
      d(x W_x) = [dr*, du*, dn*],   d(h W_h) = [dr*, du*, dn* r],   d b_hn = sum_b dn* r
      dr* = dn* e r (1 - r),  du* = dh (h_{t-1} - n) u (1 - u),  dh_{t-1} = dh u
    """
    r, u, n, e = saved
    h_prev, dh = carry.h, dcarry.h
    dn = dh * (1.0 - u) * (1.0 - n * n)
    gates = [dn * e * r * (1.0 - r), dh * (h_prev - n) * u * (1.0 - u)]
    dnr = dn * r
    return ({"b_hn": dnr.sum(axis=0)}, jnp.concatenate(gates + [dn], axis=-1),
            jnp.concatenate(gates + [dnr], axis=-1), Carry(dh * u))
