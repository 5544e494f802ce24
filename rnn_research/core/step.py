"""One recurrent step, the piece every execution path shares (engine, streaming, time-major).

  zx_t = x_t W_x + b                       input projection, [B, G*H]
  carry_{t-1} <- init  where r_t            a reset starts a new episode (Haiku's ResetCore)
  zh_t = (h_{t-1} ⊙ d) W_h                 recurrent projection, [B, G*H]; d is the
                                           recurrent-dropout mask [B, H] (Gal & Ghahramani
                                           2016: one mask per sequence), 1 without dropout
  (carry_t, y_t) = pointwise(pw, zx_t + zh_t, zh_t[..., zh_columns], carry_{t-1})
  past a sequence's end (m_t false): carry_t = carry_{t-1}, y_t = 0.
Both projections run in the weights' dtype (`config.model.dtype`, the compute dtype) and
accumulate in float32 (`matmul`); the pointwise math and the carry stay float32.
With `batch_per_step` norm, zx_t and zh_t are each batch-normalised (`norms/batch_per_step.py`)
and, in training, the step also returns its batch statistics.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnn_research.core import carry as carries
from rnn_research.core.carry import Carry
from rnn_research.core.cells.base import Cell

StepStats = Any  # batch_per_step's (mu_x, s2_x, mu_h, s2_h, n) in training, else None


def matmul(a: jax.Array, w: jax.Array) -> jax.Array:
  """a [..., K] W [K, N] with a cast to W's dtype (the compute dtype), accumulated and returned
  in float32 or wider (for float32 or float64 W, the plain product)."""
  return jnp.matmul(a.astype(w.dtype), w,
                    preferred_element_type=jnp.promote_types(w.dtype, jnp.float32))


def project(p: dict[str, Any], x: jax.Array) -> jax.Array:
  """x [..., F] -> x W_x + b [..., G*H]."""
  return matmul(x, p["w_x"]) + p["b"]


def masked_pointwise(cell: Cell, pw: dict[str, jax.Array], z: jax.Array, zh: jax.Array | None,
                     carry: Carry, m: jax.Array | None,
                     probe: jax.Array | None = None) -> tuple[Carry, jax.Array]:
  """`cell.step_pointwise`, then freeze the carry and zero y where m [B] is False."""
  return mask_step(*cell.step_pointwise(pw, z, zh, carry, probe), carry, m)


def mask_step(new: Carry, y: jax.Array, carry: Carry,
              m: jax.Array | None) -> tuple[Carry, jax.Array]:
  """Past a sequence's end (m [B] False): the carry stays `carry` and y = 0."""
  if m is None:
    return new, y
  return carries.where(m, new, carry), jnp.where(m[:, None], y, jnp.zeros_like(y))


def reset(carry: Carry, r: jax.Array | None, init: Carry | None) -> Carry:
  """carry <- init (zeros if None) in the rows where r [B] is True."""
  if r is None:
    return carry
  return carries.where(r, carries.zeros_like(carry) if init is None else init, carry)


def recurrent_input(carry: Carry, rmask: jax.Array | None) -> jax.Array:
  """The h_{t-1} that enters W_h: h ⊙ d with the recurrent-dropout mask d [B, H]."""
  return carry.h if rmask is None else carry.h * rmask


def recur(cell: Cell, p: dict[str, Any], carry: Carry, zx: jax.Array, m: jax.Array | None,
          probe: jax.Array | None = None, *, r: jax.Array | None = None,
          init: Carry | None = None, rmask: jax.Array | None = None
          ) -> tuple[Carry, jax.Array, StepStats]:
  """One step given its input projection zx [B, G*H]; r [B] resets, rmask [B, H] dropout.

  Returns (carry_t, y_t [B, H], the step's batch statistics or None).
  """
  carry = reset(carry, r, init)
  zh = matmul(recurrent_input(carry, rmask), p["w_h"]) if "w_h" in p else None  # None: no W_h
  stats = None
  if "bn" in p:  # batch_per_step: z = BN_t(x W_x) + BN_t(h W_h) + b
    zx, zh, stats = cell.step_norm.normalize(p["bn"], zx, zh, m, carry.step)
    zx = zx + p["b"]
  cols = cell.zh_columns()
  new, y = masked_pointwise(cell, p["pw"], zx if zh is None else zx + zh,
                            None if cols is None or zh is None else zh[..., cols], carry, m, probe)
  if carry.step is not None:  # the row's step index advances where the row is valid
    advance = 1.0 if m is None else m[:, None].astype(carry.step.dtype)
    new = new._replace(step=carry.step + advance)
  return new, y, stats


def cell_step(cell: Cell, p: dict[str, Any], carry: Carry, x: jax.Array, m: jax.Array | None,
              probe: jax.Array | None = None, **kw: Any) -> tuple[Carry, jax.Array, StepStats]:
  """One whole step from x_t [B, F] -> (carry_t, y_t [B, H], stats); `probe` [B, H] is added
  to h_t. `kw`: r, init, rmask of `recur`."""
  return recur(cell, p, carry, project(p, x), m, probe, **kw)
