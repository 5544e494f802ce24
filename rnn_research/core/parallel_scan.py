"""One layer of a linear-recurrence cell (`Cell.recurrent` False) over time by associative scan.

(Or, with `associative=False`, by a sequential `lax.scan` of the same elementwise recurrence:
on XLA:CPU that measured faster, see docs/speed.md.)

For the cells of `rnn_research.core.cells.min_cells` and `cells.lru` every step is affine in
the scan's state s_t (real for minGRU / minLSTM, where s_t = h_t; complex for the LRU),

  s_t = a_t ⊙ s_{t-1} + b_t,          (a_t, b_t) = cell.coefficients(pw, x_t W_x + b),

and affine maps compose associatively: applying (a1, b1) then (a2, b2) is

  (a1, b1) • (a2, b2) = (a1 ⊙ a2, a2 ⊙ b1 + b2),

so `jax.lax.associative_scan` gives every s_t in O(log T) depth; the carry is h_t =
cell.pack(s_t) and the output y_t = cell.readout(pw, s_t, z_t). The sequential path
(`step.recur` -> `Cell.pointwise`) computes the same numbers step by step; this module only
rewrites the engine's semantics as per-step coefficients:

  mask m_t False (past a sequence's end): the carry is frozen, a_t = 1, b_t = 0, and y_t = 0;
  reset r_t True (Haiku's ResetCore): the carry entering step t is `init` (zeros if None), so
    the step no longer reads s_{t-1}: a_t' = 0, b_t' = b_t + a_t ⊙ s_init (after the mask, so
    a reset at a padded step leaves the carry at init, as in the sequential path);
  carry0 h_0 enters as the first element's offset: b_0' = b_0 + a_0' ⊙ s_0.

Then s_t = B_t, the b part of (a_0', b_0') • ... • (a_t', b_t'). Gradients are plain autodiff
of the scan; `remat` wraps the whole layer in `jax.checkpoint`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnn_research.core.carry import Carry
from rnn_research.core.cells.min_cells import MinCell
from rnn_research.core.step import project


def combine(first: tuple[jax.Array, jax.Array],
            second: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(a1, b1) then (a2, b2): h -> a2 ⊙ (a1 ⊙ h + b1) + b2 = (a1 a2) ⊙ h + (a2 b1 + b2)."""
  a1, b1 = first
  a2, b2 = second
  return a1 * a2, a2 * b1 + b2


def coefficients(cell: MinCell, p: dict[str, Any], zs: jax.Array, mask: jax.Array | None,
                 resets: jax.Array | None = None, init: Carry | None = None,
                 ) -> tuple[jax.Array, jax.Array]:
  """Per-step (a_t', b_t') [T, B, S] of zs = xs W_x + b, with the mask and the resets folded
  in (module docstring)."""
  a, b = cell.coefficients(p["pw"], zs)
  if mask is not None:
    keep = mask[..., None]
    a = jnp.where(keep, a, jnp.ones_like(a))
    b = jnp.where(keep, b, jnp.zeros_like(b))
  if resets is not None:
    r = resets[..., None]
    if init is not None:
      b = jnp.where(r, b + a * cell.unpack(jnp.asarray(init.h)).astype(a.dtype), b)
    a = jnp.where(r, jnp.zeros_like(a), a)
  return a, b


def run(cell: MinCell, p: dict[str, Any], xs: jax.Array, mask: jax.Array | None, carry0: Carry, *,
        resets: jax.Array | None = None, init: Carry | None = None,
        remat: bool = False, associative: bool = True,
        unroll: int = 1) -> tuple[jax.Array, Carry]:
  """As `engine.run_layer`: xs [T, B, F], mask [T, B] bool or None, carry0 = Carry(h_0 [B, W]),
  resets [T, B] bool or None, init a Carry (h [B, W] or [W]) or None (zeros)
  -> (ys [T, B, H], Carry(h_T)), ys 0 where mask is False (W = H but for the LRU)."""
  if cell.recurrent:
    raise ValueError(f"{type(cell).__name__} has a recurrent matrix W_h; parallel_scan runs "
                     "only linear-recurrence cells (min_gru, min_lstm, lru)")

  def layer(p, xs, mask, resets, init, h0):
    if xs.shape[0] == 0:
      return jnp.zeros(xs.shape[:2] + (cell.hidden_size,), h0.dtype), h0
    zs = project(p, xs)
    a, b = coefficients(cell, p, zs, mask, resets, init)
    s0 = cell.unpack(h0)
    b = b.at[0].add(a[0] * s0)
    if associative:
      _, ss = jax.lax.associative_scan(combine, (a, b), axis=0)
    else:
      ss = jax.lax.scan(lambda s, ab: (ab[0] * s + ab[1],) * 2, jnp.zeros_like(s0), (a, b),
                        unroll=unroll)[1]
    ys = cell.readout(p["pw"], ss, zs)
    ys = ys if mask is None else jnp.where(mask[..., None], ys, jnp.zeros_like(ys))
    return ys, cell.pack(ss[-1])

  if remat:
    layer = jax.checkpoint(layer)
  ys, h_last = layer(p, xs, mask, resets, init, carry0.h)
  return ys, Carry(h_last)
