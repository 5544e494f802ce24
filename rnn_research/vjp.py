"""A custom VJP for one layer's scan: the weight gradients as single GEMMs over all steps.

Autodiff of `lax.scan` accumulates dW_h (and dW_x) step by step inside the reverse scan. Here
the reverse scan carries only d(carry) and the pointwise parameters' gradient, and writes

  dz_t  = d pointwise / d z_t                     [T, B, G*H]   (= dzx_t)
  dzh_t = dz_t + d pointwise / d zh_t             [T, B, G*H]   (the GRU's reset path)
  dh_{t-1} += dzh_t W_h^T

after which dW_h = sum_t h_{t-1}^T dzh_t, dW_x = sum_t x_t^T dz_t, db = sum_t dz_t and
dX = dz W_x^T are each one einsum over all steps. Forward stores z_t (and zh_t for cells that
need it) and carry_{t-1}; with remat it stores the carries only and recomputes z_t.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnn_research.cells.base import Carry, Cell
from rnn_research.step import masked_pointwise, project


def scan_custom_vjp(cell: Cell, p: dict[str, Any], xs: jax.Array, mask: jax.Array | None,
                    carry0: Carry, how: Any) -> tuple[jax.Array, Carry]:
  """As `engine.run_layer` (xs [T, B, F] -> ys [T, B, H], final carry), custom backward."""
  needs_zh = cell.needs_zh

  def forward(p, xs, mask, carry0):
    def body(carry, inputs):
      u, m = inputs
      zx = u if how.hoist else project(p, u)
      zh = carry[0] @ p["w_h"]
      z = zx + zh
      new, y = masked_pointwise(cell, p["pw"], z, zh if needs_zh else None, carry, m)
      if how.remat:
        saved = (carry,)
      else:
        saved = (carry, z, zh) if needs_zh else (carry, z)
      return new, (y, saved)

    carry, (ys, saved) = jax.lax.scan(body, carry0, (project(p, xs) if how.hoist else xs, mask))
    return (ys, carry), saved

  @jax.custom_vjp
  def layer(p, xs, mask, carry0):
    return forward(p, xs, mask, carry0)[0]

  def layer_fwd(p, xs, mask, carry0):
    out, saved = forward(p, xs, mask, carry0)
    return out, (p, xs, mask, saved)

  def layer_bwd(res, cotangents):
    p, xs, mask, saved = res
    dys, dcarry_last = cotangents
    w_h = p["w_h"]

    def body(state, inputs):
      dcarry, dpw = state
      dy, m, x, sv = inputs
      carry_prev = sv[0]
      if how.remat:
        zh = carry_prev[0] @ w_h
        z = project(p, x) + zh
      else:
        z = sv[1]
        zh = sv[2] if needs_zh else None

      if needs_zh:
        _, pullback = jax.vjp(lambda pw, z, zh, c: masked_pointwise(cell, pw, z, zh, c, m),
                              p["pw"], z, zh, carry_prev)
        dpw_t, dz, dzh_direct, dcarry_prev = pullback((dcarry, dy))
        dzh = dz + dzh_direct
      else:
        _, pullback = jax.vjp(lambda pw, z, c: masked_pointwise(cell, pw, z, zh, c, m),
                              p["pw"], z, carry_prev)
        dpw_t, dz, dcarry_prev = pullback((dcarry, dy))
        dzh = dz
      dh_prev = dcarry_prev[0] + dzh @ w_h.T
      dpw = jax.tree.map(jnp.add, dpw, dpw_t)
      return ((dh_prev,) + tuple(dcarry_prev[1:]), dpw), ((dz, dzh) if needs_zh else dz)

    dpw0 = jax.tree.map(jnp.zeros_like, p["pw"])
    (dcarry0, dpw), dzs = jax.lax.scan(body, (tuple(dcarry_last), dpw0),
                                       (dys, mask, xs, saved), reverse=True)
    dz, dzh = dzs if needs_zh else (dzs, dzs)
    h_prev = saved[0][0]
    grads = {
        "w_x": jnp.einsum("tbf,tbg->fg", xs, dz),
        "b": dz.sum(axis=(0, 1)),
        "w_h": jnp.einsum("tbh,tbg->hg", h_prev, dzh),
        "pw": dpw,
    }
    return grads, dz @ p["w_x"].T, None, dcarry0

  layer.defvjp(layer_fwd, layer_bwd)
  return layer(p, xs, mask, tuple(carry0))
