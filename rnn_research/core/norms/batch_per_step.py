"""`batch_per_step` norm: recurrent batch normalisation (Cooijmans et al. 2016) inside the step.

The two projections of a step are normalised separately, each with statistics of its own time
step t over the valid rows of the batch (padding excluded):

  z_t = BN_t(x_t W_x; g_x) + BN_t(h_{t-1} W_h; g_h) + b
  BN_t(a; g) = g ⊙ (a - mu_t) / sqrt(s2_t + eps),   mu_t, s2_t [G*H] over {b : m_{b,t}}

with gains g_x, g_h [G*H] initialised to 0.1 (the paper's choice, which keeps tanh and the
gates out of saturation) and no shift of their own (b is the shift). The cell state c is not
normalised. Running averages of (mu_t, s2_t) are kept for t < T_max = `norm_max_steps`; in eval
mode and when streaming, step t uses those of min(t, T_max - 1) ("statistics of T_max reused
beyond it"). The step index is a per-row counter in the carry, so masks freeze it and resets
restart it. In training, statistics are those of the batch at scan step t (after a reset
mid-row, rows at different episode positions share step t's statistics).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

INIT_GAIN = 0.1  # Cooijmans et al. 2016, section 4


class StepBatchNorm(nnx.Module):
  """Gains g_x, g_h [W] and running statistics [T_max, W] of the two projections of a cell."""

  def __init__(self, width: int, max_steps: int, eps: float, momentum: float):
    self.eps, self.momentum = eps, momentum
    self.use_running_average = False
    self.gain_x = nnx.Param(jnp.full((width,), INIT_GAIN))
    self.gain_h = nnx.Param(jnp.full((width,), INIT_GAIN))
    self.mean_x = nnx.BatchStat(jnp.zeros((max_steps, width)))
    self.var_x = nnx.BatchStat(jnp.ones((max_steps, width)))
    self.mean_h = nnx.BatchStat(jnp.zeros((max_steps, width)))
    self.var_h = nnx.BatchStat(jnp.ones((max_steps, width)))

  def arrays(self) -> dict[str, jax.Array]:
    """What `normalize` reads: gains and running statistics."""
    return {k: getattr(self, k)[...] for k in ("gain_x", "gain_h", "mean_x", "var_x",
                                               "mean_h", "var_h")}

  def normalize(self, bn: dict[str, jax.Array], zx: jax.Array, zh: jax.Array,
                m: jax.Array | None, count: jax.Array):
    """zx, zh [B, W] of one step, m [B] valid rows, count [B, 1] each row's step index ->
    (BN(zx), BN(zh), batch statistics (mu_x, s2_x, mu_h, s2_h, n) or None in eval mode)."""
    if self.use_running_average:
      t = jnp.clip(count[:, 0].astype(jnp.int32), 0, bn["mean_x"].shape[0] - 1)
      mx, vx, mh, vh = (bn[k][t] for k in ("mean_x", "var_x", "mean_h", "var_h"))
      stats = None
    else:
      w = jnp.ones(zx.shape[:1], zx.dtype) if m is None else m.astype(zx.dtype)
      n = w.sum()
      mx, vx = _masked_moments(zx, w, n)
      mh, vh = _masked_moments(zh, w, n)
      stats = (mx, vx, mh, vh, n)
    return (bn["gain_x"] * (zx - mx) * jax.lax.rsqrt(vx + self.eps),
            bn["gain_h"] * (zh - mh) * jax.lax.rsqrt(vh + self.eps), stats)

  def update(self, stats: Any) -> None:
    """Running averages of rows t < min(T, T_max) from per-step statistics ([T, W] each, n
    [T]); a step with no valid row leaves its row unchanged."""
    *moments, n = stats
    rows = min(n.shape[0], self.mean_x.shape[0])
    seen = (n[:rows] > 0)[:, None]
    for var, new in zip((self.mean_x, self.var_x, self.mean_h, self.var_h), moments):
      old = var[...]
      mixed = self.momentum * old[:rows] + (1 - self.momentum) * new[:rows]
      var[...] = old.at[:rows].set(jnp.where(seen, mixed, old[:rows]))


def _masked_moments(a: jax.Array, w: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and (biased) variance over the rows of a [B, W] weighted by w [B] (n = sum w)."""
  count = jnp.maximum(n, 1.0)
  mean = (a * w[:, None]).sum(axis=0) / count
  return mean, (jnp.square(a - mean) * w[:, None]).sum(axis=0) / count
