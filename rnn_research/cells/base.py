"""What every cell shares: one fused input GEMM, one fused recurrent GEMM, then pointwise math.

A cell with G gate blocks of width H owns

  W_x [F, G*H], b [G*H], W_h [R, G*H]      (R = H; the mlp transition uses R = H, G*H = M)

and one step is

  zh_t = h_{t-1} W_h                          (the only recurrent matmul)
  z_t  = x_t W_x + b + zh_t                   (all gates' pre-activations)
  (carry_t, y_t) = pointwise(pw, z_t, zh_t[..., zh_columns], carry_{t-1})

where `carry = (h, ...)` always starts with the vector that enters W_h and `pw` holds the cell's
extra parameters (peepholes, the mlp's second layer, ...). The engine (`rnn_research.engine`)
owns how the two matmuls run; cells only define `pointwise`, which must be pure and read
nothing but its arguments and static Python attributes.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.activations import ACTIVATIONS
from rnn_research.initializers import RECURRENT_INITS, blocks, input_init
from rnn_research.registry import Registry

Carry = tuple[jax.Array, ...]
CELLS: Registry[type["Cell"]] = Registry("cell")


class Cell(nnx.Module):
  """Base of all cells. Subclasses set `num_gates`, `carry_size` and `pointwise`.

  Attributes:
    hidden_size: H, width of h_t (the output y_t).
  """

  def __init__(self, in_features: int, cfg: Any, rngs: nnx.Rngs, *, num_gates: int,
               gate_width: int | None = None):
    self.in_features = in_features
    self.hidden_size = cfg.hidden_size
    self.activation = ACTIVATIONS.get(cfg.activation)
    width = cfg.hidden_size if gate_width is None else gate_width
    init = RECURRENT_INITS.get(cfg.recurrent_init)
    self.w_x = nnx.Param(input_init(rngs.params(), (in_features, num_gates * width)))
    self.w_h = nnx.Param(blocks(init, rngs.params(), cfg.hidden_size, width, num_gates,
                                cfg.recurrent_scale))
    self.b = nnx.Param(jnp.zeros((num_gates * width,), jnp.float32))

  def extra_params(self) -> dict[str, jax.Array]:
    """The `pw` argument of `pointwise`: the cell's parameters beyond W_x, b, W_h."""
    return {}

  def weights(self) -> dict[str, Any]:
    """Raw arrays {w_x, b, w_h, pw} for the engine's pure functions."""
    return {"w_x": self.w_x[...], "b": self.b[...], "w_h": self.w_h[...],
            "pw": self.extra_params()}

  def carry_widths(self) -> tuple[int, ...]:
    """Widths of the carry's members; the first is h."""
    return (self.hidden_size,)

  def initial_carry(self, batch_size: int, dtype=jnp.float32) -> Carry:
    """h_0 = 0 (eq. 13.1), and every other carry member 0."""
    return tuple(jnp.zeros((batch_size, w), dtype) for w in self.carry_widths())

  def zh_columns(self) -> slice | None:
    """The columns of zh_t that `pointwise` needs apart from z_t (None: it needs none)."""
    return None

  def pointwise(self, pw: dict[str, jax.Array], z: jax.Array, zh: jax.Array | None,
                carry: Carry) -> tuple[Carry, jax.Array]:
    """z [B, G*H], zh[..., zh_columns] (or None) and the previous carry -> (carry, y [B, H])."""
    raise NotImplementedError
