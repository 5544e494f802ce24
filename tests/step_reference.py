"""Shared by the linear-recurrence tests (min cells, LRU): the streaming step run by a plain
`lax.scan`, the reference the parallel-scan path must equal, and a padded batch."""
import jax
import jax.numpy as jnp
import numpy as np

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


def model_data(features: int, t: int = 8):
  """3 rows [3, t, features] of lengths t, 3 and 1 (the mask [3, t]), and large values to put
  in the padding (`pad`)."""
  rng = np.random.default_rng(42)
  xs = jnp.asarray(rng.normal(size=(3, t, features)), jnp.float32)
  mask = jnp.arange(t)[None, :] < jnp.asarray([t, 3, 1])[:, None]
  pad = jnp.asarray(100.0 * rng.normal(size=(3, t, features)), jnp.float32)
  return xs, mask, pad
