"""Long short-term memory (lecture section 4, eq. 13.3-13.6) and its variants.

`standard` (PyTorch, Flax):            `lecture` (eq. 13.3-13.6, our time index):
  i = sigmoid(z_i)                       f = sigmoid(z_f + c*_{t-1} W_cf)        (13.4)
  f = sigmoid(z_f)                       g = σ(z_g + c*_{t-1} W_cg)              (13.5)
  g = σ(z_g)                             c_t = f ⊙ c_{t-1} + (1 - f) ⊙ g          (13.3)
  c_t = f ⊙ c_{t-1} + i ⊙ g              o = sigmoid(z_o + c*_{t-1} W_co)
  o = sigmoid(z_o)                       h_t = o ⊙ σ(c_t)                         (13.6)
  h_t = o ⊙ σ(c_t)
with z = x_t W_x + b + h_{t-1} W_h; c* = stop_gradient(c) (the lecture's footnote) and the c*
terms are present only when `lecture_peephole` is on. Under `norm='layer_per_step'` the output
reads LN(c_t) in place of c_t (Ba et al. 2016; `norms/layer_per_step.py`). The Greff et al.
2017 variants (`peephole`, `nig`, `nfg`, `nog`, `niaf`, `noaf`, `np`, `cifg`, `fgr`) are flag
sets in `lstm_variants.py`; peepholes add p_i ⊙ c_{t-1} to z_i, p_f ⊙ c_{t-1} to z_f, p_o ⊙ c_t
to z_o. Carry: h, c, and `gates` = [i, f, o]_{t-1} for `fgr`.

With a projection (`proj_size` P > 0, LSTMP, Sak et al. 2014; torch's `proj_size`), the output
and the h that enters W_h are projected: h_t = (o ⊙ σ(c_t)) W_p, W_p [H, P], W_h [P, 4H],
h [B, P], c [B, H]; `hidden_size` stays the width of c and of each gate.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core.carry import Carry
from rnn_research.core.cells.base import CELLS, Cell
from rnn_research.core.cells.lstm_variants import LSTM_VARIANTS, LSTMVariant
from rnn_research.core.initializers import input_init

_PEEPHOLE_STD = 0.1


@CELLS.register("lstm")
class LSTMCell(Cell):
  """LSTM of one variant; see the module docstring for the equations."""

  spec_args = {"variant": "lstm_variant", "lecture_peephole": "lecture_peephole",
               "forget_bias": "forget_bias", "proj_size": "proj_size"}

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs,
               variant: str = "standard", lecture_peephole: bool = False,
               forget_bias: float = 1.0, proj_size: int = 0, **common: Any):
    """variant: an `LSTM_VARIANTS` name; proj_size: P of h_t = (o ⊙ σ(c_t)) W_p (0: none, h_t
    has width H); `common`: the arguments every cell takes (`Cell`). `self.hidden_size` is h's
    width (P with a projection), `self.cell_size` c's and each gate's (H)."""
    self.variant = LSTM_VARIANTS.get(variant)
    self.lecture_peephole = bool(lecture_peephole)
    self.cell_size = hidden_size
    gates = self.variant.gates
    super().__init__(in_features, proj_size or hidden_size, rngs=rngs, num_gates=len(gates),
                     gate_width=hidden_size, **common)
    if "f" in gates:
      f = gates.index("f")
      self.b[...] = self.b[...].at[f * hidden_size:(f + 1) * hidden_size].set(forget_bias)
    self.projected = proj_size > 0
    if self.projected:
      self.w_p = nnx.Param(input_init(rngs.params(), (hidden_size, proj_size)))
    if self.variant.peephole:
      self.peep = nnx.Param(_PEEPHOLE_STD * jax.random.normal(
          rngs.params(), (len(self._gated), hidden_size)))
    if self.variant.full_gate_recurrence:
      self.w_gates = nnx.Param(input_init(rngs.params(), (3 * hidden_size, 3 * hidden_size)))
    if self.lecture_peephole:
      self.w_c = nnx.Param(input_init(rngs.params(), (hidden_size, len(gates) * hidden_size)))

  @property
  def _gated(self) -> tuple[str, ...]:
    """The sigmoid gates present (their peepholes, in order)."""
    return tuple(g for g in self.variant.gates if g != "g")

  def extra_params(self) -> dict[str, jax.Array]:
    pw = {}
    if self.variant.peephole:
      pw["peep"] = self.peep[...]
    if self.variant.full_gate_recurrence:
      pw["w_gates"] = self.w_gates[...]
    if self.lecture_peephole:
      pw["w_c"] = self.w_c[...]
    if self.projected:
      pw["w_p"] = self.w_p[...]
    return pw

  def carry_fields(self) -> dict[str, int]:
    size = self.cell_size
    fields = {"h": self.hidden_size, "c": size}
    return {**fields, "gates": 3 * size} if self.variant.full_gate_recurrence else fields

  def pointwise(self, pw, z, zh, carry: Carry):
    v, size = self.variant, self.cell_size
    c_prev = carry.c
    if self.lecture_peephole:
      z = z + jax.lax.stop_gradient(c_prev) @ pw["w_c"]
    pre = {g: z[..., k * size:(k + 1) * size] for k, g in enumerate(v.gates)}
    if v.full_gate_recurrence:
      fed_back = carry.gates @ pw["w_gates"]
      for k, g in enumerate(("i", "f", "o")):
        pre[g] = pre[g] + fed_back[..., k * size:(k + 1) * size]
    peep = dict(zip(self._gated, pw["peep"])) if v.peephole else {}
    gate = {}
    for g in ("i", "f"):
      if g in pre:
        gate[g] = jax.nn.sigmoid(pre[g] + peep[g] * c_prev if g in peep else pre[g])
    if v.coupled:
      gate["i"] = 1.0 - gate["f"]
    g_in = self.activation(pre["g"]) if v.input_act else pre["g"]
    if v.lecture:
      c = gate["f"] * c_prev + (1.0 - gate["f"]) * g_in
    else:
      c = gate.get("f", 1.0) * c_prev + gate.get("i", 1.0) * g_in
    if "o" in pre:
      gate["o"] = jax.nn.sigmoid(pre["o"] + peep["o"] * c if "o" in peep else pre["o"])
    c_out = c if self.step_ln is None else self.step_ln.cell(pw["ln"], c)  # LN(c_t), Ba et al.
    h = gate.get("o", 1.0) * (self.activation(c_out) if v.output_act else c_out)
    if self.projected:
      h = h @ pw["w_p"]
    if v.full_gate_recurrence:
      return Carry(h, c, jnp.concatenate([gate["i"], gate["f"], gate["o"]], axis=-1)), h
    return Carry(h, c), h

  def analytic_backward(self) -> bool:
    """Whether `pointwise_saving`/`pointwise_backward` may stand in for autodiff of the step
    (`core/vjp.py`): the standard cell with tanh, no in-step axis around it, no projection."""
    return self.variant == LSTMVariant() and self.plain() and not self.projected

  def pointwise_saving(self, pw, z, zh, carry: Carry):
    """`pointwise` of the standard tanh LSTM, also returning what its backward reads:
    (i, f, g, o, tanh c_t)."""
    c_prev, size = carry.c, self.cell_size
    i, f, o = (jax.nn.sigmoid(z[..., k * size:(k + 1) * size]) for k in (0, 1, 3))
    g = jnp.tanh(z[..., 2 * size:3 * size])
    c = f * c_prev + i * g
    tc = jnp.tanh(c)
    h = o * tc
    return Carry(h, c), h, (i, f, g, o, tc)

  def pointwise_backward(self, saved, carry: Carry, dcarry: Carry):
    """dL/d(h_t, c_t) -> (d pw, d(x W_x + b) [B, 4H], None (d(h W_h) is the same), d carry_{t-1}
    but the W_h path), from the saved gates:

      dc = dc_t + dh_t o (1 - tanh^2 c_t),    dc_{t-1} = dc f
      dz = [dc g i (1 - i),  dc c_{t-1} f (1 - f),  dc i (1 - g^2),  dh_t tanh(c_t) o (1 - o)]
    """
    i, f, g, o, tc = saved
    c_prev, dh, dc = carry.c, dcarry.h, dcarry.c
    dc = dc + dh * o * (1.0 - tc * tc)
    dz = jnp.concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                          dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
    return {}, dz, None, Carry(jnp.zeros_like(dh), dc * f)
