"""`layer` norm (Fig 13.7): between layers, statistics of one example's whole output sequence.

For example b with valid steps V_b (mask), over (time, features):
  mu_b = mean_{t in V_b, f} h_{b,t,f},   s2_b = mean_{t in V_b, f} (h_{b,t,f} - mu_b)^2
  LN(h_{b,t}) = g ⊙ (h_{b,t} - mu_b) / sqrt(s2_b + eps) + b          g, b [H]
Training uses each sequence's own statistics and keeps running averages of mu and s2. The
lecture's test-time problem: streaming does not know the future, so `step` uses the running
averages; a full-sequence call in eval mode uses them when `eval_norm_stats='running'` (then it
equals streaming) and the sequence's own when `'sequence'`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core.choices import EvalNormStats


class SequenceLayerNorm(nnx.Module):
  """Masked per-sequence layer norm with running statistics (scalars)."""

  def __init__(self, width: int, eps: float, momentum: float, eval_stats: EvalNormStats):
    self.eps, self.momentum, self.eval_stats = eps, momentum, eval_stats
    self.use_running_average = False
    self.gain = nnx.Param(jnp.ones((width,)))
    self.bias = nnx.Param(jnp.zeros((width,)))
    self.mean = nnx.BatchStat(jnp.zeros(()))
    self.var = nnx.BatchStat(jnp.ones(()))

  def per_step_ok(self) -> bool:
    """Per-step application equals the sequence call only with the running statistics."""
    return self.use_running_average and self.eval_stats == "running"

  def _apply(self, hs, mean, var, mask):
    out = self.gain[...] * (hs - mean) * jax.lax.rsqrt(var + self.eps) + self.bias[...]
    return out if mask is None else jnp.where(mask[..., None], out, 0.0)

  def __call__(self, hs: jax.Array, mask: jax.Array | None) -> jax.Array:
    """hs [T, B, H], mask [T, B] -> [T, B, H]."""
    if self.use_running_average and self.eval_stats == "running":
      return self._apply(hs, self.mean[...], self.var[...], mask)
    valid = jnp.ones(hs.shape[:2], hs.dtype) if mask is None else mask.astype(hs.dtype)
    count = valid.sum(axis=0) * hs.shape[-1]                             # [B]
    mean = (hs * valid[..., None]).sum(axis=(0, 2)) / jnp.maximum(count, 1.0)
    var = (jnp.square(hs - mean[:, None]) * valid[..., None]).sum(axis=(0, 2)) / jnp.maximum(
        count, 1.0)
    if not self.use_running_average:
      seen = (count > 0).astype(hs.dtype)
      n = jnp.maximum(seen.sum(), 1.0)
      m, any_seen = self.momentum, seen.sum() > 0  # an all-padding batch says nothing
      self.mean[...] = jnp.where(
          any_seen, m * self.mean[...] + (1 - m) * (mean * seen).sum() / n, self.mean[...])
      self.var[...] = jnp.where(
          any_seen, m * self.var[...] + (1 - m) * (var * seen).sum() / n, self.var[...])
    return self._apply(hs, mean[:, None], var[:, None], mask)

  def step(self, h: jax.Array, mask: jax.Array | None) -> jax.Array:
    """One streaming step, h [B, H]: the running statistics (the future is unknown)."""
    return self._apply(h, self.mean[...], self.var[...], mask)
