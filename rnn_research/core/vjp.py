"""A custom VJP for one layer's scan: the weight gradients as GEMMs over chunks of steps.

Autodiff of `lax.scan` accumulates dW_h (and dW_x) step by step inside the reverse scan. Here
the reverse scan carries only d(carry) and the pointwise parameters' gradient, and writes

  dz_t  = d pointwise / d z_t                     [K, B, G*H]   (= dzx_t, and part of dzh_t)
  de_t  = d pointwise / d zh_t[..., cols]         [K, B, |cols|] (the GRU's reset path)
  dh_{t-1} += (dz_t W_h^T + de_t W_h[:, cols]^T) ⊙ d        (d: recurrent-dropout mask)

for one chunk of K steps, after which that chunk's dW_h += sum_t h_{t-1}^T dz_t (+ sum_t
h_{t-1}^T de_t in the columns `cols`), dW_x += sum_t x_t^T dz_t, db += sum_t dz_t and
dX_chunk = dz W_x^T are each one GEMM, and the reverse scan goes on to the chunk before.
With K = T (GPU/TPU by default) that is one GEMM per weight over all steps; on CPU K is sized
so that dz holds about `engine.CHUNK_BYTES`, which stays in cache between the reverse scan that
writes it and the GEMMs that read it (docs/speed.md has the measurements). Forward stores z_t
(and zh_t[..., cols] for cells that need it) and carry_{t-1}; with remat it stores the carries
only and recomputes z_t.

A cell may instead give its own backward (`analytic_backward()` true: `pointwise_saving` keeps
its gate activations in the forward, `pointwise_backward` returns dz_t and the whole
d(h W_h)_t without recomputing any of them). Then one matmul forms dh_{t-1} and
dW_h = sum_t h_{t-1}^T d(h W_h)_t. The plain tanh rnn, GRU and standard LSTM do; remat keeps
the generic path.

The rule is defined with `symbolic_zeros`: the forward learns which inputs are perturbed, and
the backward computes no gradient nobody asked for. The first layer's data xs takes no
gradient in training, so its dX GEMMs are skipped; an unused final carry's cotangent arrives as
a symbolic zero and is instantiated.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from rnn_research.core import carry as carries
from rnn_research.core.carry import Carry
from rnn_research.core.cells.base import Cell
from rnn_research.core.step import (mask_step, masked_pointwise, matmul, project,
                                    recurrent_input, reset)


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What the forward saves and the backward computes for one layer.

  Attributes:
    cell: the layer's cell. how: the engine's `Strategy` (hoist, remat, chunk size).
    cols: zh columns the cell's pointwise reads (the GRU's h W_hn), or None.
    analytic: use the cell's own backward (`Cell.analytic_backward`, never with remat).
  """

  cell: Cell
  how: Any
  cols: slice | None
  analytic: bool

  @property
  def whole_de(self) -> bool:
    """Whether the reverse step returns de as the whole d(h W_h) (None: it equals dz): the
    cell's own backward does, and so does the generic one when the cell reads all of zh_t
    (layer_per_step), where d(h W_h) = dz + de is one GEMM instead of two."""
    return self.analytic or self.cols == slice(None)


def _sum_outer(a: jax.Array, b: jax.Array) -> jax.Array:
  """sum_t a_t^T b_t for a [T, B, M], b [T, B, N] -> [M, N], as one 2-D GEMM (on XLA:CPU
  faster than einsum("tbm,tbn->mn"))."""
  return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def chunk_steps(how: Any, steps: int, batch: int, width: int) -> int:
  """Steps K per chunk of the reverse scan, at most `steps`: `how.chunk_steps` if set, else the
  power of two whose float32 dz [K, B, width] is nearest `how.chunk_bytes` (None: all steps)."""
  if how.chunk_steps:
    return min(how.chunk_steps, steps)
  if how.chunk_bytes is None:
    return steps
  return int(min(steps, 2 ** max(0, round(np.log2(how.chunk_bytes / (batch * width * 4))))))


def scan_custom_vjp(cell: Cell, p: dict[str, Any], xs: jax.Array, mask: jax.Array | None,
                    carry0: Carry, how: Any, resets: jax.Array | None = None,
                    init: Carry | None = None,
                    rmask: jax.Array | None = None) -> tuple[jax.Array, Carry]:
  """As `engine.run_layer` (xs [T, B, F] -> ys [T, B, H], final carry), custom backward.

  With resets [T, B] the reverse scan routes d(carry) at a reset into d(init); with the
  recurrent-dropout mask rmask [B, H], h_{t-1} ⊙ rmask is what enters W_h (and dW_h).
  """
  plan = _Plan(cell, how, cell.zh_columns(), cell.analytic_backward() and not how.remat)
  if resets is not None and init is None:
    init = carries.zeros_like(carry0)

  @jax.custom_vjp
  def layer(p, xs, mask, carry0, resets, init, rmask):
    return _forward(plan, p, xs, mask, carry0, resets, init, rmask)[0]

  def layer_fwd(*primals):
    xs_perturbed = primals[1].perturbed
    p, xs, mask, carry0, resets, init, rmask = jax.tree.map(
        lambda a: a.value, primals, is_leaf=lambda a: isinstance(a, CustomVJPPrimal))
    out, saved = _forward(plan, p, xs, mask, carry0, resets, init, rmask)
    return out, (p, xs, mask, resets, init, rmask, saved, xs_perturbed)

  def layer_bwd(res, cotangents):
    cotangents = jax.tree.map(
        lambda c: jnp.zeros(c.shape, c.dtype) if isinstance(c, SymbolicZero) else c,
        cotangents, is_leaf=lambda c: isinstance(c, SymbolicZero))
    return _backward(plan, res, cotangents)

  layer.defvjp(layer_fwd, layer_bwd, symbolic_zeros=True)
  return layer(p, xs, mask, carry0, resets, init, rmask)


def _forward(plan: _Plan, p, xs, mask, carry0, resets, init, rmask):
  """The scan; saves (carry_{t-1}, gates) for a cell's own backward, else carry_{t-1} and
  (unless remat) z_t and zh_t[..., cols]."""
  cell, how, cols = plan.cell, plan.how, plan.cols

  def body(carry, inputs):
    u, m, r = inputs
    carry = reset(carry, r, init)
    zh = matmul(recurrent_input(carry, rmask), p["w_h"])
    z = (u if how.hoist else project(p, u)) + zh
    extra = None if cols is None else zh[..., cols]
    if plan.analytic:  # keep the gates: the backward need not recompute them
      new, y, gates = cell.pointwise_saving(p["pw"], z, extra, carry)
      new, y = mask_step(new, y, carry, m)
      return new, (y, (carry, gates))
    new, y = masked_pointwise(cell, p["pw"], z, extra, carry, m)
    return new, (y, (carry,) if how.remat else (carry, z, extra))

  xs_in = project(p, xs) if how.hoist else xs
  carry, (ys, saved) = jax.lax.scan(body, carry0, (xs_in, mask, resets), unroll=how.unroll)
  return (ys, carry), saved


def _backward(plan: _Plan, res, cotangents):
  """The reverse scan in chunks of K steps (the first chunk, T mod K steps, last); dX only if
  xs is perturbed (None otherwise: a symbolic zero)."""
  p, xs, mask, resets, init, rmask, saved, xs_perturbed = res
  dys, dcarry_last = cotangents
  dinit0 = None if init is None else carries.zeros_like(init)
  acc0 = {k: jnp.zeros(p[k].shape, jnp.promote_types(p[k].dtype, jnp.float32))
          for k in ("w_x", "b", "w_h")}
  state = ((dcarry_last, jax.tree.map(jnp.zeros_like, p["pw"]), dinit0), acc0)
  steps = xs.shape[0]
  size = chunk_steps(plan.how, steps, xs.shape[1], p["w_h"].shape[-1])
  head = steps % size  # the first steps, the chunk the reverse scan reaches last
  inputs = (dys, mask, resets, xs, saved)
  dx_dtype = xs.dtype if xs_perturbed else None
  chunk = lambda state, inputs: _chunk_back(plan, p, rmask, dx_dtype, state, inputs)
  tail = jax.tree.map(lambda a: a[head:].reshape((-1, size) + a.shape[1:]), inputs)
  state, dxs = jax.lax.scan(chunk, state, tail, reverse=True)
  if head:
    state, dx_head = chunk(state, jax.tree.map(lambda a: a[:head], inputs))
  if xs_perturbed:
    dxs = dxs.reshape((-1,) + dxs.shape[2:])
    dxs = jnp.concatenate([dx_head, dxs]) if head else dxs
  (dcarry0, dpw, dinit), grads = state
  grads = {k: g.astype(p[k].dtype) for k, g in grads.items()}  # float32 sums, W's dtype
  dcarry0 = jax.tree.map(lambda d, c: d.astype(c.dtype), dcarry0, saved[0])
  drmask = None if rmask is None else jnp.zeros_like(rmask)  # a sample, not a parameter
  return dict(grads, pw=dpw), dxs, None, dcarry0, None, dinit, drmask


def _chunk_back(plan: _Plan, p, rmask, dtype, state, inputs):
  """The reverse scan over one chunk of steps, then its weight gradients as GEMMs, and the
  chunk's dX in `dtype` (None: no dX)."""
  step_state, acc = state
  step_state, (dz, de) = jax.lax.scan(
      lambda s, i: _step_back(plan, p, rmask, s, i), step_state, inputs, reverse=True,
      unroll=plan.how.unroll)
  xs_c, saved_c = inputs[3], inputs[4]
  h_in = recurrent_input(saved_c[0], rmask)
  dw_h = _sum_outer(h_in, de if plan.whole_de and de is not None else dz)
  if plan.cols is not None and not plan.whole_de:
    dw_h = dw_h.at[:, plan.cols].add(_sum_outer(h_in, de))
  acc = jax.tree.map(jnp.add, acc, {"w_x": _sum_outer(xs_c, dz), "b": dz.sum(axis=(0, 1)),
                                     "w_h": dw_h})
  return (step_state, acc), None if dtype is None else matmul(dz, p["w_x"].T).astype(dtype)


def _step_back(plan: _Plan, p, rmask, state, inputs):
  """One reverse step: d(carry_t) -> d(carry_{t-1}), d pw, and (dz_t, de_t) for the GEMMs."""
  dcarry, dpw, dinit = state
  dy, m, r, x, sv = inputs
  carry_prev, w_h = sv[0], p["w_h"]  # carry_prev: after the reset
  if plan.analytic:  # de is the whole d(h W_h) here (None: it equals dz): one matmul
    dpw_t, dz, de, dcarry_prev = _analytic_pullback(plan.cell, sv[1], carry_prev, dcarry, dy, m)
    dh_in = matmul(dz if de is None else de, w_h.T)
  else:
    dpw_t, dz, de, dcarry_prev = _autodiff_pullback(plan, p, rmask, sv, dcarry, dy, m, x)
    if plan.whole_de:  # zh_t read whole: d(h W_h) = dz + de
      de = dz + de
      dh_in = matmul(de, w_h.T)
    else:
      dh_in = matmul(dz, w_h.T)
      if plan.cols is not None:
        dh_in = dh_in + matmul(de, w_h[:, plan.cols].T)
  dcarry_prev = dcarry_prev._replace(
      h=dcarry_prev.h + (dh_in if rmask is None else dh_in * rmask))
  if r is not None:  # a reset step: d(carry) flows into d(init), not to the step before
    dinit = jax.tree.map(lambda a, d: a + jnp.where(r[:, None], d, 0.0), dinit, dcarry_prev)
    dcarry_prev = jax.tree.map(lambda d: jnp.where(r[:, None], 0.0, d), dcarry_prev)
  return (dcarry_prev, jax.tree.map(jnp.add, dpw, dpw_t), dinit), (dz, de)


def _autodiff_pullback(plan: _Plan, p, rmask, sv, dcarry, dy, m, x):
  """The pullback of the masked pointwise step by `jax.vjp` (z_t recomputed under remat):
  (d pw, dz, de or None, d carry_{t-1} but the W_h path)."""
  carry_prev = sv[0]
  if plan.how.remat:
    zh = matmul(recurrent_input(carry_prev, rmask), p["w_h"])
    z = project(p, x) + zh
    extra = None if plan.cols is None else zh[..., plan.cols]
  else:
    _, z, extra = sv
  _, pullback = jax.vjp(lambda pw, z, e, c: masked_pointwise(plan.cell, pw, z, e, c, m),
                        p["pw"], z, extra, carry_prev)
  return pullback((dcarry, dy))


def _analytic_pullback(cell: Cell, gates: Any, carry_prev: Carry, dcarry: Carry, dy: jax.Array,
                       m: jax.Array | None):
  """The pullback of `mask_step(cell.pointwise_saving(...))` from the cell's own backward, for a
  cell whose output y_t is its new h."""
  d = dcarry._replace(h=dcarry.h + dy)
  if m is not None:  # a frozen step passes d(carry) straight through
    frozen = jax.tree.map(lambda c: jnp.where(m[:, None], 0.0, c), dcarry)
    d = jax.tree.map(lambda c: jnp.where(m[:, None], c, 0.0), d)
  dpw, dz, de, dprev = cell.pointwise_backward(gates, carry_prev, d)
  if m is not None:
    dprev = jax.tree.map(jnp.add, dprev, frozen)
  return dpw, dz, de, dprev
