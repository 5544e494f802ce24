"""`batch` norm between layers, per feature over the valid (batch, time) positions only.

  mu_f = sum_{b,t} m_{b,t} h_{b,t,f} / sum m,   s2_f likewise,
  BN(h) = g ⊙ (h - mu) / sqrt(s2 + eps) + b
Padding never enters the statistics, so sequences of different lengths (the lecture's
difficulty) are handled exactly. Running averages are used in eval mode and when streaming.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class MaskedBatchNorm(nnx.Module):
  """Masked batch norm over (batch, time) with per-feature running statistics."""

  def __init__(self, width: int, eps: float, momentum: float):
    self.eps, self.momentum = eps, momentum
    self.use_running_average = False
    self.gain = nnx.Param(jnp.ones((width,)))
    self.bias = nnx.Param(jnp.zeros((width,)))
    self.mean = nnx.BatchStat(jnp.zeros((width,)))
    self.var = nnx.BatchStat(jnp.ones((width,)))

  def per_step_ok(self) -> bool:
    """Per-step application equals the sequence call only with the running statistics."""
    return self.use_running_average

  def _apply(self, hs, mean, var, mask):
    out = self.gain[...] * (hs - mean) * jax.lax.rsqrt(var + self.eps) + self.bias[...]
    return out if mask is None else jnp.where(mask[..., None], out, 0.0)

  def __call__(self, hs: jax.Array, mask: jax.Array | None) -> jax.Array:
    """hs [T, B, H], mask [T, B] -> [T, B, H]."""
    if self.use_running_average:
      return self._apply(hs, self.mean[...], self.var[...], mask)
    valid = jnp.ones(hs.shape[:2], hs.dtype) if mask is None else mask.astype(hs.dtype)
    count = jnp.maximum(valid.sum(), 1.0)
    mean = (hs * valid[..., None]).sum(axis=(0, 1)) / count
    var = (jnp.square(hs - mean) * valid[..., None]).sum(axis=(0, 1)) / count
    m, seen = self.momentum, valid.sum() > 0  # an all-padding batch says nothing
    self.mean[...] = jnp.where(seen, m * self.mean[...] + (1 - m) * mean, self.mean[...])
    self.var[...] = jnp.where(seen, m * self.var[...] + (1 - m) * var, self.var[...])
    return self._apply(hs, mean, var, mask)

  def step(self, h: jax.Array, mask: jax.Array | None) -> jax.Array:
    """One streaming step, h [B, H]: the running statistics."""
    return self._apply(h, self.mean[...], self.var[...], mask)
