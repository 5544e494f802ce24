"""What every cell shares: one fused input GEMM, one fused recurrent GEMM, then pointwise math.

A cell with G gate blocks of width H owns

  W_x [F, G*H], b [G*H], W_h [R, G*H]      (R = H; the mlp transition uses R = H, G*H = M)

and one step is

  zh_t = h_{t-1} W_h                          (the only recurrent matmul)
  z_t  = x_t W_x + b + zh_t                   (all gates' pre-activations)
  (carry_t, y_t) = pointwise(pw, z_t, zh_t[..., zh_columns], carry_{t-1})

where `carry = (h, ...)` always starts with the vector that enters W_h and `pw` holds the cell's
extra parameters (peepholes, the mlp's second layer, ...). The engine (`rnn_research.core.engine`)
owns how the two matmuls run; cells only define `pointwise`, which must be pure and read
nothing but its arguments and static Python attributes.

The engine runs `step_pointwise`, which adds the design axes that act inside the step around
any cell's `pointwise`:
  horizontal skip of span k (Fig 13.13), the carry holding h_{t-k}, ..., h_{t-1}:
    `learned`:  z_t += h_{t-k} W_s                       (a third matrix in the pre-activation)
    `residual`: h_t = cell(h_{t-1}, x_t) + h_{t-k}       (c, if any, untouched)
  `mini_vertical` norm (Fig 13.10): the h that enters the next step's W_h is LN(h_t); the
    output y_t = h_t to the next layer stays un-normalised.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_research.core.activations import ACTIVATIONS
from rnn_research.core.initializers import RECURRENT_INITS, blocks, input_init
from rnn_research.core.norms.batch_per_step import StepBatchNorm
from rnn_research.core.norms.features import normalize_features
from rnn_research.core.registry import Registry

HORIZONTAL_SKIPS = ("none", "residual", "learned")

Carry = tuple[jax.Array, ...]
CELLS: Registry[type["Cell"]] = Registry("cell")


class Cell(nnx.Module):
  """Base of all cells. Subclasses set `num_gates`, `carry_size` and `pointwise`.

  Attributes:
    hidden_size: H, width of h_t (the output y_t).
    recurrent: False for cells with no W_h (gates of x_t only, `min_cells`): `weights()` has no
      "w_h" and `engine.run_layer` runs them by `parallel_scan`.
  """

  recurrent: bool = True

  def __init__(self, in_features: int, cfg: Any, rngs: nnx.Rngs, *, num_gates: int,
               gate_width: int | None = None, carry_norm: bool = False,
               recurrent: bool = True):
    self.in_features = in_features
    self.recurrent = recurrent
    self.hidden_size = cfg.hidden_size
    self.activation = ACTIVATIONS.get(cfg.activation)
    width = cfg.hidden_size if gate_width is None else gate_width
    init = RECURRENT_INITS.get(cfg.recurrent_init)
    self.w_x = nnx.Param(input_init(rngs.params(), (in_features, num_gates * width)))
    if recurrent:
      self.w_h = nnx.Param(blocks(init, rngs.params(), cfg.hidden_size, width, num_gates,
                                  cfg.recurrent_scale))
    self.b = nnx.Param(jnp.zeros((num_gates * width,), jnp.float32))
    if cfg.horizontal_skip not in HORIZONTAL_SKIPS:
      raise ValueError(f"unknown horizontal_skip {cfg.horizontal_skip!r}; valid choices: "
                       f"{', '.join(HORIZONTAL_SKIPS)}")
    self.skip = cfg.horizontal_skip
    self.skip_span = cfg.skip_span
    if self.skip == "learned":
      self.w_skip = nnx.Param(input_init(rngs.params(), (cfg.hidden_size, num_gates * width)))
    self.carry_norm_eps = cfg.norm_eps if carry_norm else None
    if carry_norm:
      self.carry_gain = nnx.Param(jnp.ones((cfg.hidden_size,)))
      self.carry_bias = nnx.Param(jnp.zeros((cfg.hidden_size,)))
    self.learned_init = cfg.learned_initial_state
    if self.learned_init:  # (h_0, c_0, ...) concatenated, trained from zeros
      self.carry_init = nnx.Param(jnp.zeros((sum(self.carry_widths()),)))
    self.step_norm = nnx.data(None)

  def attach_step_norm(self, cfg: Any) -> None:
    """Adds the `batch_per_step` norm of both projections (`norms/batch_per_step.py`); its
    step counter becomes the last carry member."""
    if not self.recurrent:
      raise ValueError("norm='batch_per_step' normalises h_{t-1} W_h, and this cell has no W_h; "
                       "use norm='layer', 'mini_layer' or 'batch'")
    self.step_norm = StepBatchNorm(self.w_x.shape[1], cfg.norm_max_steps, cfg.norm_eps,
                                   cfg.norm_momentum)

  def extra_params(self) -> dict[str, jax.Array]:
    """The `pw` argument of `pointwise`: the cell's parameters beyond W_x, b, W_h."""
    return {}

  def weights(self) -> dict[str, Any]:
    """Raw arrays {w_x, b, w_h, pw} (and `bn`, the batch_per_step norm's) for the engine's
    pure functions."""
    pw = self.extra_params()
    if self.skip == "learned":
      pw = {**pw, "w_skip": self.w_skip[...]}
    if self.carry_norm_eps is not None:
      pw = {**pw, "carry_gain": self.carry_gain[...], "carry_bias": self.carry_bias[...]}
    out = {"w_x": self.w_x[...], "b": self.b[...], "pw": pw}
    if self.recurrent:
      out["w_h"] = self.w_h[...]
    if self.step_norm is not None:
      out["bn"] = self.step_norm.arrays()
    return out

  def carry_widths(self) -> tuple[int, ...]:
    """Widths of the carry's members; the first is h."""
    return (self.hidden_size,)

  def initial_carry(self, batch_size: int, dtype=jnp.float32) -> Carry:
    """h_0 = 0 (eq. 13.1) and every other carry member 0, or the learned (h_0, c_0, ...) with
    `learned_initial_state`; the skip history h_{1-k..0} is always 0. Each is [B, width]."""
    widths = self.carry_widths()
    if self.learned_init:
      parts = jnp.split(self.carry_init[...].astype(dtype), np.cumsum(widths)[:-1])
      carry = tuple(jnp.broadcast_to(v, (batch_size, w)) for v, w in zip(parts, widths))
    else:
      carry = tuple(jnp.zeros((batch_size, w), dtype) for w in widths)
    if self.skip != "none":
      carry += (jnp.zeros((batch_size, self.skip_span * self.hidden_size), dtype),)
    if self.step_norm is not None:  # the step index t of `batch_per_step`
      carry += (jnp.zeros((batch_size, 1), dtype),)
    return carry

  def step_pointwise(self, pw: dict[str, jax.Array], z: jax.Array, zh: jax.Array | None,
                     carry: Carry, probe: jax.Array | None = None) -> tuple[Carry, jax.Array]:
    """`pointwise` with the horizontal skip and the mini_vertical norm around it.

    `probe` [B, H] is added to h_t on every path it takes (up, to the next step, into the skip
    history), so its gradient is dL/dh_t (`diagnostics.gradient_flow`).
    """
    history = None
    if self.skip != "none":
      carry, history = carry[:-1], carry[-1]                  # [B, k*H], oldest first
      oldest = history[..., :self.hidden_size]                 # h_{t-k}
      if self.skip == "learned":
        z = z + oldest @ pw["w_skip"]
    new, y = self.pointwise(pw, z, zh, carry)
    if self.skip == "residual":
      y = y + oldest
    if probe is not None:
      y = y + probe
    h = y
    if self.carry_norm_eps is not None:
      h = normalize_features(y, pw["carry_gain"], pw["carry_bias"], self.carry_norm_eps)
    new = (h,) + tuple(new[1:])
    if history is not None:
      new += (jnp.concatenate([history[..., self.hidden_size:], y], axis=-1),)
    return new, y

  def analytic_backward(self) -> bool:
    """Whether the cell's own `pointwise_saving` / `pointwise_backward` stand in for autodiff
    of its step in the custom VJP (`rnn_research.core.vjp`); cells without them say False.

    For a cell whose output y_t is its new h: `pointwise_saving(pw, z, zh, carry) -> (carry_t,
    y_t, saved)` and `pointwise_backward(saved, carry_{t-1}, d carry_t) -> (d pw, dz,
    d(h W_h) or None where it equals dz, d carry_{t-1} but the W_h path)`.
    """
    return False

  def zh_columns(self) -> slice | None:
    """The columns of zh_t that `pointwise` needs apart from z_t (None: it needs none)."""
    return None

  def pointwise(self, pw: dict[str, jax.Array], z: jax.Array, zh: jax.Array | None,
                carry: Carry) -> tuple[Carry, jax.Array]:
    """z [B, G*H], zh[..., zh_columns] (or None) and the previous carry -> (carry, y [B, H])."""
    raise NotImplementedError
