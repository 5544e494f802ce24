"""`vertical` norm (Fig 13.11): at each step, across the layer axis of the L hidden vectors.

  mu_t = mean_l h_t^(l),  s2_t = mean_l (h_t^(l) - mu_t)^2        (per feature, [B, H])
  h_t^(l) <- g_l ⊙ (h_t^(l) - mu_t) / sqrt(s2_t + eps) + b_l      g, b [L, H]
The normalised states are the carries that enter the next step; the outputs that go up the
stack within the step stay un-normalised. It needs every layer at one step, so a model with it
runs time-major, and at least two layers of equal width. The lecture notes it is not done in
practice: it mixes the statistics of different learned filters.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class VerticalNorm(nnx.Module):
  """Normalises a [L, B, H] stack of hidden vectors over L, per feature."""

  def __init__(self, num_layers: int, width: int, eps: float):
    self.eps = eps
    self.gain = nnx.Param(jnp.ones((num_layers, width)))
    self.bias = nnx.Param(jnp.zeros((num_layers, width)))

  def __call__(self, hs: jax.Array) -> jax.Array:
    """hs [L, B, H] -> [L, B, H]."""
    mean = hs.mean(axis=0, keepdims=True)
    var = jnp.square(hs - mean).mean(axis=0, keepdims=True)
    return (self.gain[...][:, None] * (hs - mean) * jax.lax.rsqrt(var + self.eps)
            + self.bias[...][:, None])
