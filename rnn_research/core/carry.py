"""The named carry of one layer: what a step hands to the next.

Fields a layer does not use are None (an empty pytree node), so a carry is a small pytree
whatever the design:

  h        [B, H]    the hidden state that enters W_h (after `mini_vertical` norm, if any)
  c        [B, H]    the LSTM's memory cell
  gates    [B, 3H]   the FGR LSTM's [i, f, o]_{t-1}
  history  [B, k*H]  horizontal skip of span k: h_{t-k}, ..., h_{t-1}, oldest first
  step     [B, 1]    `batch_per_step` norm: each row's step index t (masks freeze it)
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Carry(NamedTuple):
  """One layer's carry; see the module docstring for the fields and shapes."""

  h: jax.Array
  c: jax.Array | None = None
  gates: jax.Array | None = None
  history: jax.Array | None = None
  step: jax.Array | None = None


def where(keep: jax.Array, new: Carry, old: Carry) -> Carry:
  """`new` in the rows where keep [B] is True, else `old`."""
  return jax.tree.map(lambda n, o: jnp.where(keep[:, None], n, o), new, old)


def zeros_like(carry: Carry) -> Carry:
  return jax.tree.map(jnp.zeros_like, carry)
