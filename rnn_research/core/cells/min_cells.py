"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?"): gates of x_t alone.

With no h_{t-1} inside any gate, one step is linear in the carry,

  h_t = a_t ⊙ h_{t-1} + b_t,      a_t, b_t [B, H] functions of x_t only,

so a layer runs over time as an associative scan (`rnn_research.core.parallel_scan`, depth
O(log T)) instead of a sequential loop. `pointwise` is the same step for streaming and
time-major execution (`step.cell_step`); both paths share `coefficients`, so they agree.

The cells have no recurrent matrix (`recurrent = False`: no W_h, `weights()` has no
"w_h"). The candidate h̃ is linear, as in the paper's parallel form: `activation` is not read
(nor `recurrent_init`, `recurrent_scale`, `forget_bias`, `lstm_variant`); biases start at 0.
The plain (not log-space) form is used.

Axes that put h_{t-1} through a nonlinearity or a matrix inside the step would make the
recurrence nonlinear (no associative scan): `ModelSpec` refuses them with the reason
(horizontal skips, `mini_vertical` and `vertical` norms, the mlp transition, recurrent dropout,
`batch_per_step`). Between-layer norms (`layer`, `mini_layer`, `batch`) and vertical skips act
on a layer's output on its way up, outside the recurrence, and compose.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core.carry import Carry
from rnn_research.core.cells.base import CELLS, Cell


class MinCell(Cell):
  """Base of the parallel-scan cells: `coefficients(pw, z) -> (a, b)`, s_t = a ⊙ s_{t-1} + b.

  The scan's state s_t is the carry's h as `unpack` reads it, and the layer's output is
  `readout(pw, s_t, z_t)`; for minGRU / minLSTM both are the identity: s_t = h_t = y_t [B, H]
  (the LRU's s_t is complex, `cells/lru.py`). `activation`, `recurrent_init` and
  `recurrent_scale` are accepted (every cell takes them) and not read.
  """

  recurrent = False

  def coefficients(self, pw: dict[str, jax.Array], z: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """z = x_t W_x + b [..., G*H] -> (a_t, b_t), each shaped as the state s [..., S]."""
    raise NotImplementedError

  def unpack(self, h: jax.Array) -> jax.Array:
    """The carry's h [..., W] -> the scan's state s [..., S]."""
    return h

  def pack(self, s: jax.Array) -> jax.Array:
    """The scan's state s [..., S] -> the carry's h [..., W] (inverse of `unpack`)."""
    return s

  def readout(self, pw: dict[str, jax.Array], s: jax.Array, z: jax.Array) -> jax.Array:
    """The layer's output y_t [..., H] from the state s_t and z_t = x_t W_x + b."""
    return s

  def pointwise(self, pw, z, zh, carry: Carry):
    """The sequential step: s_t = a_t ⊙ s_{t-1} + b_t (zh is None: there is no W_h)."""
    a, b = self.coefficients(pw, z)
    s = a * self.unpack(carry.h) + b
    return Carry(self.pack(s)), self.readout(pw, s, z)


@CELLS.register("min_gru")
class MinGRUCell(MinCell):
  """minGRU. Gate blocks (z, h̃) of z_t = x_t W_x + b, W_x [F, 2H], b [2H]:

    z_t = sigmoid(x_t W_z + b_z)                 update gate        [B, H]
    h̃_t = x_t W_h̃ + b_h̃                          candidate, linear  [B, H]
    h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t        a_t = 1 - z_t, b_t = z_t ⊙ h̃_t
  """

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, **common: Any):
    super().__init__(in_features, hidden_size, rngs=rngs, num_gates=2, **common)

  def coefficients(self, pw, z):
    size = self.hidden_size
    gate = jax.nn.sigmoid(z[..., :size])
    return 1.0 - gate, gate * z[..., size:]


@CELLS.register("min_lstm")
class MinLSTMCell(MinCell):
  """minLSTM. Gate blocks (f, i, h̃) of z_t = x_t W_x + b, W_x [F, 3H], b [3H]:

    f_t = sigmoid(x_t W_f + b_f),  i_t = sigmoid(x_t W_i + b_i)              [B, H]
    h̃_t = x_t W_h̃ + b_h̃                                      candidate, linear
    f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)        so f' + i' = 1
    h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t                        a_t = f'_t, b_t = i'_t ⊙ h̃_t

  Computed without 0/0 or overflow when both gates saturate: with u = e^{-z_f}, v = e^{-z_i},
  f' = (1 + v) / (2 + u + v), i' = (1 + u) / (2 + u + v); numerator and denominator are scaled
  by e^{-m}, m = max(0, -z_f, -z_i) (f', i' do not depend on m, so m takes no gradient). Three
  exps and one division, cheaper than the log-space sigmoid(log f - log i) with log_sigmoid
  and with the same values (docs/speed.md).
  """

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, **common: Any):
    super().__init__(in_features, hidden_size, rngs=rngs, num_gates=3, **common)

  def coefficients(self, pw, z):
    size = self.hidden_size
    neg_f, neg_i = -z[..., :size], -z[..., size:2 * size]
    m = jax.lax.stop_gradient(jnp.maximum(jnp.maximum(neg_f, neg_i), 0.0))
    e0, e_f, e_i = jnp.exp(-m), jnp.exp(neg_f - m), jnp.exp(neg_i - m)   # e^-m (1, u, v)
    inv = 1.0 / (2.0 * e0 + e_f + e_i)                                   # >= 1 term: no 0/0
    return (e0 + e_i) * inv, (e0 + e_f) * inv * z[..., 2 * size:]      # f', i' ⊙ h̃
