"""Time reversal for the bidirectional stack (`config.model.bidirectional`).

The backward stack reads each sequence's valid part from its end; padding stays in place, so
the reversed rows keep their masks. Its resets are the forward episodes' last valid steps, so
that every episode is still read on its own. All arrays are time-major [T, B, ...].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def reversal(mask: jax.Array | None, steps: int, batch: int) -> jax.Array:
  """[T, B] time indices that reverse each row's valid positions and keep padding in place:
  the j-th of a row's n valid steps swaps with its (n-1-j)-th. An involution."""
  t = jnp.broadcast_to(jnp.arange(steps)[:, None], (steps, batch))
  if mask is None:
    return steps - 1 - t
  pos = jnp.argsort(jnp.where(mask, t, steps + t), axis=0)  # valid positions first, in order
  rank = jnp.cumsum(mask, axis=0) - 1
  mirror = jnp.clip(mask.sum(axis=0) - 1 - rank, 0, steps - 1)
  return jnp.where(mask, jnp.take_along_axis(pos, mirror, axis=0), t)


def gather(seq: jax.Array, order: jax.Array) -> jax.Array:
  """seq [T, B, ...] reordered in time per row: out[t, b] = seq[order[t, b], b]."""
  return jnp.take_along_axis(seq, order.reshape(order.shape + (1,) * (seq.ndim - 2)), axis=0)


def reversed_resets(resets: jax.Array | None, mask: jax.Array | None,
                    order: jax.Array) -> jax.Array | None:
  """Episode starts of the reversed rows: each episode's last valid step, reordered."""
  if resets is None:
    return None
  valid = jnp.ones_like(resets) if mask is None else mask
  steps = resets.shape[0]
  nxt = _next_valid(valid)  # t ends an episode <=> the next valid step starts one
  ends = valid & (nxt < steps) & gather(resets, jnp.minimum(nxt, steps - 1))
  return gather(ends, order)


def merge(forward: jax.Array, backward: jax.Array, how: str) -> jax.Array:
  """The two stacks' top outputs [T, B, H] -> [T, B, 2H] (`concat`) or [T, B, H] (`sum`)."""
  return jnp.concatenate([forward, backward], axis=-1) if how == "concat" else forward + backward


def _next_valid(valid: jax.Array) -> jax.Array:
  """[T, B]: the first valid step after t (T if none)."""
  steps = valid.shape[0]
  idx = jnp.where(valid, jnp.arange(steps)[:, None], steps)
  after = jax.lax.cummin(idx[::-1], axis=0)[::-1]  # first valid at or after t
  return jnp.concatenate([after[1:], jnp.full_like(after[:1], steps)], axis=0)
