"""One recurrent step, the piece every execution path shares (engine, streaming, time-major).

  zx_t = x_t W_x + b                       input projection, [B, G*H]
  zh_t = h_{t-1} W_h                       recurrent projection, [B, G*H]
  (carry_t, y_t) = pointwise(pw, zx_t + zh_t, zh_t[..., zh_columns], carry_{t-1})
  past a sequence's end (m_t false): carry_t = carry_{t-1}, y_t = 0.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnn_research.cells.base import Carry, Cell


def project(p: dict[str, Any], x: jax.Array) -> jax.Array:
  """x [..., F] -> x W_x + b [..., G*H]."""
  return x @ p["w_x"] + p["b"]


def masked_pointwise(cell: Cell, pw: dict[str, jax.Array], z: jax.Array, zh: jax.Array | None,
                     carry: Carry, m: jax.Array | None,
                     probe: jax.Array | None = None) -> tuple[Carry, jax.Array]:
  """`cell.step_pointwise`, then freeze the carry and zero y where m [B] is False."""
  new, y = cell.step_pointwise(pw, z, zh, carry, probe)
  if m is None:
    return new, y
  keep = m[:, None]
  new = tuple(jnp.where(keep, n, c) for n, c in zip(new, carry))
  return new, jnp.where(keep, y, jnp.zeros_like(y))


def recur(cell: Cell, p: dict[str, Any], carry: Carry, zx: jax.Array, m: jax.Array | None,
          probe: jax.Array | None = None) -> tuple[Carry, jax.Array]:
  """One step given its input projection zx [B, G*H]."""
  zh = carry[0] @ p["w_h"]
  cols = cell.zh_columns()
  return masked_pointwise(cell, p["pw"], zx + zh, None if cols is None else zh[..., cols],
                          carry, m, probe)


def cell_step(cell: Cell, p: dict[str, Any], carry: Carry, x: jax.Array, m: jax.Array | None,
              probe: jax.Array | None = None) -> tuple[Carry, jax.Array]:
  """One whole step from x_t [B, F] -> (carry_t, y_t [B, H]); `probe` [B, H] is added to h_t."""
  return recur(cell, p, carry, project(p, x), m, probe)
