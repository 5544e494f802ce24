"""Per-step normalisation of one hidden vector over its features (the lecture's "mini" norms).

  LN(h) = g ⊙ (h - mean_f(h)) / sqrt(var_f(h) + eps) + b        h [..., H], g, b [H]

`mini_layer` (Fig 13.8) applies it on the path to the next layer; `mini_vertical` (Fig 13.10) on
the path to the next time step (inside the cell's step, see `cells/base.py`). Each hidden vector
lands on a sphere of radius sqrt(H) before gain and bias (Fig 13.9), so at tiny widths it loses
meaning: with H = 1 every output is b.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def normalize_features(h: jax.Array, gain: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """LN(h) over the last axis."""
  mean = h.mean(axis=-1, keepdims=True)
  var = jnp.square(h - mean).mean(axis=-1, keepdims=True)
  return gain * (h - mean) * jax.lax.rsqrt(var + eps) + bias


class MiniLayerNorm(nnx.Module):
  """`mini_layer`: LN of every h_t^(l) on its way to layer l+1; the carry is untouched."""

  def __init__(self, width: int, eps: float):
    self.eps = eps
    self.gain = nnx.Param(jnp.ones((width,)))
    self.bias = nnx.Param(jnp.zeros((width,)))

  def __call__(self, hs: jax.Array, mask: jax.Array | None) -> jax.Array:
    """hs [T, B, H] (or [B, H]), mask [T, B] (or [B]) -> the same shape, 0 where masked."""
    out = normalize_features(hs, self.gain[...], self.bias[...], self.eps)
    return out if mask is None else jnp.where(mask[..., None], out, 0.0)

  step = __call__

  def per_step_ok(self) -> bool:
    return True
