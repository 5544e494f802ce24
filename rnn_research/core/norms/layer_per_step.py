"""`layer_per_step` norm: the layer-normalised cells of Ba et al. 2016, inside the step.

Both projections are normalised over their G*H features, each row and step on its own
statistics, with gains g_x, g_h [G*H] (init 1) and no shift of their own (b is the shift):

  z_t = LN(x_t W_x; g_x) + LN(h_{t-1} W_h; g_h) + b,   LN(a; g) = g ⊙ (a - mean(a)) / sqrt(var(a) + eps)

and the LSTM's output reads the normalised cell, h_t = o ⊙ σ(LN(c_t; g_c, b_c)) (c_t itself
stays un-normalised in the carry). The GRU's candidate scales the normalised recurrent part:
n = σ(LN(x W_x)_n + b_n + r ⊙ (LN(h W_h)_n + b_hn)) (Ba et al., appendix). No statistic crosses
rows or steps, so training, eval, streaming and padding all see the same function.

The engine hands a cell z = zx + zh and zh (all columns, `Cell.zh_columns`); the norm takes
zx = z - zh apart again, so every engine, the custom VJP included, differentiates the same
function (dW_x reads dL/dz, dW_h dL/dz + dL/dzh, as for the GRU's reset path).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core.norms.features import normalize_features


def scale_features(a: jax.Array, gain: jax.Array, eps: float) -> jax.Array:
  """g ⊙ (a - mean(a)) / sqrt(var(a) + eps) over the last axis, no shift."""
  centred = a - a.mean(axis=-1, keepdims=True)
  return gain * centred * jax.lax.rsqrt(jnp.square(centred).mean(axis=-1, keepdims=True) + eps)


class StepLayerNorm(nnx.Module):
  """Gains g_x, g_h [W] of a cell's two projections (W = G*H) and, for a cell with a memory
  cell (`cell_width`, the LSTM's H), the gain and shift g_c, b_c [H] of LN(c_t)."""

  def __init__(self, width: int, eps: float, cell_width: int | None = None):
    self.eps = eps
    self.gain_x = nnx.Param(jnp.ones((width,)))
    self.gain_h = nnx.Param(jnp.ones((width,)))
    if cell_width is not None:
      self.gain_c = nnx.Param(jnp.ones((cell_width,)))
      self.bias_c = nnx.Param(jnp.zeros((cell_width,)))
    self.has_cell = cell_width is not None

  def arrays(self) -> dict[str, jax.Array]:
    """The gains (and g_c, b_c) as raw arrays, for the cell's pure step."""
    names = ("gain_x", "gain_h") + (("gain_c", "bias_c") if self.has_cell else ())
    return {k: getattr(self, k)[...] for k in names}

  def preactivation(self, ln: dict[str, jax.Array], z: jax.Array,
                    zh: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z = zx + zh, zh [B, W] (zx without b; `ln` holds the gains and b) ->
    (LN(zx; g_x) + LN(zh; g_h) + b, LN(zh; g_h))."""
    zh_n = scale_features(zh, ln["gain_h"], self.eps)
    return scale_features(z - zh, ln["gain_x"], self.eps) + zh_n + ln["b"], zh_n

  def cell(self, ln: dict[str, jax.Array], c: jax.Array) -> jax.Array:
    """LN(c_t; g_c, b_c) [B, H], what the LSTM's output activation reads."""
    return normalize_features(c, ln["gain_c"], ln["bias_c"], self.eps)
