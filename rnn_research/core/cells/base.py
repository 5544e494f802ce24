"""What every cell shares: one fused input GEMM, one fused recurrent GEMM, then pointwise math.

A cell with G gate blocks of width H owns

  W_x [F, G*H], b [G*H], W_h [H, G*H]      (the mlp transition: G*H = M, its hidden width)

and one step is

  zh_t = h_{t-1} W_h                          (the only recurrent matmul)
  z_t  = x_t W_x + b + zh_t                   (all gates' pre-activations)
  (carry_t, y_t) = pointwise(pw, z_t, zh_t[..., zh_columns], carry_{t-1})

where `carry` is a `Carry` (h enters W_h) and `pw` holds the cell's extra parameters
(peepholes, the mlp's second layer, ...). The engine (`core/engine.py`) owns how the two
matmuls run; cells only define `pointwise`, which must be pure and read nothing but its
arguments and static Python attributes.

The engine runs `step_pointwise`, which adds the design axes that act inside the step around
any cell's `pointwise`:
  horizontal skip of span k (Fig 13.13), `carry.history` holding h_{t-k}, ..., h_{t-1}:
    `learned`:  z_t += h_{t-k} W_s                       (a third matrix in the pre-activation)
    `residual`: h_t = cell(h_{t-1}, x_t) + h_{t-k}       (c, if any, untouched)
  `mini_vertical` norm (Fig 13.10, `carry_norm_eps` set): the h that enters the next step's
    W_h is LN(h_t); the output y_t = h_t to the next layer stays un-normalised.
  `layer_per_step` norm (`norms/layer_per_step.py`): z_t = LN(zx_t) + LN(zh_t) + b.

A cell's own backward (`analytic_backward()` true; `core/vjp.py`), for a cell whose output y_t
is its new h: `pointwise_saving(pw, z, zh, carry) -> (carry_t, y_t, saved)` and
`pointwise_backward(saved, carry_{t-1}, d carry_t) -> (d pw, dz, d(h W_h) or None where it
equals dz, d carry_{t-1} but the W_h path)`.
"""
from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_research.core.activations import ACTIVATIONS
from rnn_research.core.carry import Carry
from rnn_research.core.choices import HorizontalSkip
from rnn_research.core.initializers import RECURRENT_INITS, blocks, input_init
from rnn_research.core.norms.batch_per_step import StepBatchNorm
from rnn_research.core.norms.features import normalize_features
from rnn_research.core.norms.layer_per_step import StepLayerNorm
from rnn_research.core.registry import Registry

CELLS: Registry[type["Cell"]] = Registry("cell")


class Cell(nnx.Module):
  """Base of all cells. Subclasses call `__init__` with their `num_gates` and define
  `pointwise` (and `carry_fields` if they carry more than h).

  Args (every cell): in_features F; hidden_size H, the width of h_t and y_t; rngs;
    activation: σ by name (`core/activations.py`); recurrent_init, recurrent_scale: W_h's
    initialiser by name and its gain; horizontal_skip, skip_span: Fig 13.13; carry_norm_eps:
    `mini_vertical` LN of the carry with this eps (None: off); learned_initial_state: train
    (h_0, c_0, ...) instead of zeros; dtype: the compute dtype of x W_x and h W_h.

  Class attributes:
    recurrent: False for cells with no W_h (gates of x_t only, `min_cells`): `weights()` has no
      "w_h" and `engine.run_layer` runs them by `parallel_scan`.
    spec_args: constructor argument -> `ModelSpec` field, for arguments beyond the common ones
      (`core/models.py` builds every registered cell from the spec with them).
  """

  recurrent: ClassVar[bool] = True
  spec_args: ClassVar[dict[str, str]] = {}

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs, num_gates: int,
               gate_width: int | None = None, activation: str = "tanh",
               recurrent_init: str = "orthogonal", recurrent_scale: float = 1.0,
               horizontal_skip: HorizontalSkip = "none", skip_span: int = 1,
               carry_norm_eps: float | None = None, learned_initial_state: bool = False,
               dtype: str = "float32"):
    self.in_features = in_features
    self.hidden_size = hidden_size
    self.activation_name = activation
    self.activation = ACTIVATIONS.get(activation)
    self.dtype = jnp.dtype(dtype)
    width = hidden_size if gate_width is None else gate_width
    self.w_x = nnx.Param(input_init(rngs.params(), (in_features, num_gates * width)))
    if self.recurrent:
      self.w_h = nnx.Param(blocks(RECURRENT_INITS.get(recurrent_init), rngs.params(),
                                  hidden_size, width, num_gates, recurrent_scale))
    self.b = nnx.Param(jnp.zeros((num_gates * width,), jnp.float32))
    self.skip = horizontal_skip
    self.skip_span = skip_span
    if self.skip == "learned":
      self.w_skip = nnx.Param(input_init(rngs.params(), (hidden_size, num_gates * width)))
    self.carry_norm_eps = carry_norm_eps
    if carry_norm_eps is not None:
      self.carry_gain = nnx.Param(jnp.ones((hidden_size,)))
      self.carry_bias = nnx.Param(jnp.zeros((hidden_size,)))
    self.learned_init = learned_initial_state
    if self.learned_init:  # (h_0, c_0, ...) concatenated, trained from zeros
      self.carry_init = nnx.Param(jnp.zeros((sum(self.carry_fields().values()),)))
    # Per-step norms of both projections, set by `models.build_cells`
    self.step_norm: StepBatchNorm | None = nnx.data(None)  # the carry gains a `step` counter
    self.step_ln: StepLayerNorm | None = nnx.data(None)

  def extra_params(self) -> dict[str, jax.Array]:
    """The `pw` argument of `pointwise`: the cell's parameters beyond W_x, b, W_h."""
    return {}

  def weights(self) -> dict[str, Any]:
    """Raw arrays {w_x, b, w_h, pw} (and `bn`, the batch_per_step norm's) for the engine's
    pure functions. Under `layer_per_step` b is added after the norms: it moves to pw["ln"]
    and the engine's b is 0."""
    pw = self.extra_params()
    b = self.b[...]
    if self.step_ln is not None:
      pw = {**pw, "ln": {**self.step_ln.arrays(), "b": b}}
      b = jnp.zeros_like(b)
    if self.skip == "learned":
      pw = {**pw, "w_skip": self.w_skip[...]}
    if self.carry_norm_eps is not None:
      pw = {**pw, "carry_gain": self.carry_gain[...], "carry_bias": self.carry_bias[...]}
    out = {"w_x": self.w_x[...].astype(self.dtype), "b": b, "pw": pw}
    if self.recurrent:
      out["w_h"] = self.w_h[...].astype(self.dtype)
    if self.step_norm is not None:
      out["bn"] = self.step_norm.arrays()
    return out

  def carry_fields(self) -> dict[str, int]:
    """The `Carry` fields the cell itself updates, with their widths; h comes first."""
    return {"h": self.hidden_size}

  def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Carry:
    """h_0 = 0 (eq. 13.1) and every other field 0, or the learned (h_0, c_0, ...) with
    `learned_initial_state`; the skip history h_{1-k..0} and step counter start at 0."""
    fields = self.carry_fields()
    if self.learned_init:
      parts = jnp.split(self.carry_init[...].astype(dtype),
                        np.cumsum(list(fields.values()))[:-1])
      values = [jnp.broadcast_to(v, (batch_size, w)) for v, w in zip(parts, fields.values())]
    else:
      values = [jnp.zeros((batch_size, w), dtype) for w in fields.values()]
    carry = Carry(**dict(zip(fields, values)))
    if self.skip != "none":
      carry = carry._replace(
          history=jnp.zeros((batch_size, self.skip_span * self.hidden_size), dtype))
    if self.step_norm is not None:
      carry = carry._replace(step=jnp.zeros((batch_size, 1), dtype))
    return carry

  def step_pointwise(self, pw: dict[str, jax.Array], z: jax.Array, zh: jax.Array | None,
                     carry: Carry, probe: jax.Array | None = None) -> tuple[Carry, jax.Array]:
    """`pointwise` with the layer_per_step norm, the horizontal skip and the mini_vertical norm
    around it. `probe` [B, H] is added to h_t on every path it takes (up, to the next step, into the skip
    history), so its gradient is dL/dh_t (`training/diagnostics.gradient_flow`).
    """
    if self.step_ln is not None:  # zh holds every column (`zh_columns`)
      z, zh = self.step_ln.preactivation(pw["ln"], z, zh)
      cols = self.pointwise_columns()
      zh = None if cols is None else zh[..., cols]
    history = carry.history                                    # [B, k*H], oldest first
    if history is not None:
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
    new = new._replace(h=h, step=carry.step)
    if history is not None:
      new = new._replace(history=jnp.concatenate([history[..., self.hidden_size:], y], axis=-1))
    return new, y

  def analytic_backward(self) -> bool:
    """Whether the cell's own backward stands in for autodiff of its step in the custom VJP
    (module docstring); cells without one say False."""
    return False

  def plain(self) -> bool:
    """No in-step axis (horizontal skip, mini_vertical or layer_per_step norm) wraps
    `pointwise`, and σ = tanh: the condition under which the cells' own backwards hold."""
    return (self.activation_name == "tanh" and self.skip == "none"
            and self.carry_norm_eps is None and self.step_ln is None)

  def zh_columns(self) -> slice | None:
    """The columns of zh_t the engine hands to `step_pointwise` apart from z_t: all of them
    under layer_per_step (its norm takes zx and zh apart), else `pointwise_columns`."""
    return slice(None) if self.step_ln is not None else self.pointwise_columns()

  def pointwise_columns(self) -> slice | None:
    """The columns of zh_t that `pointwise` needs apart from z_t (None: it needs none)."""
    return None

  def pointwise(self, pw: dict[str, jax.Array], z: jax.Array, zh: jax.Array | None,
                carry: Carry) -> tuple[Carry, jax.Array]:
    """z [B, G*H], zh[..., pointwise_columns] or None, the last carry -> (carry, y [B, H])."""
    raise NotImplementedError
