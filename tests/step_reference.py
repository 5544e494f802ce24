"""Shared by the linear-recurrence tests: the streaming step run by a plain `lax.scan`, the
reference the parallel-scan path must equal."""
import jax
import jax.numpy as jnp

from rnn_research.core.step import cell_step


def sequential(cell, p, xs, mask, carry0, resets=None, init=None):
  """lax.scan over `cell_step`: the carry replaced by `init` (zeros if None) before step t where
  resets[t] (Haiku's ResetCore), frozen and y = 0 where mask is False. xs [T, B, F]."""
  def body(carry, inputs):
    x, m, r = inputs
    if r is not None:
      fresh = jax.tree.map(jnp.zeros_like, carry) if init is None else init
      carry = jax.tree.map(lambda i, c: jnp.where(r[:, None], i, c), fresh, carry)
    return cell_step(cell, p, carry, x, m)[:2]

  carry, ys = jax.lax.scan(body, carry0, (xs, mask, resets))
  return ys, carry
