"""Vertical skips (Fig 13.12): what layer l and the readout read, with h^(-1) = x W_p.

  `none`:     layer l+1 reads h^(l); the readout reads h^(L-1)
  `residual`: layer l+1 and the readout (as "layer L") read h^(l) + h^(l-1)
  `dense`:    layer l >= 1 reads [x, h^(l-1)]; the readout reads [h^(0), ..., h^(L-1)]
W_p is learned when F != H (`project`), else the identity. Every function works on sequences
[T, B, .] and single steps [B, .] alike.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rnn_research.core.choices import VerticalSkip

Project = Callable[[jax.Array], jax.Array] | None


def layer_input(kind: VerticalSkip, l: int, x: jax.Array, outs: list[jax.Array],
                project: Project) -> jax.Array:
  """What layer l reads, given the outputs `outs` of the layers below it."""
  if l == 0:
    return x
  if kind == "dense":
    return jnp.concatenate([x, outs[l - 1]], axis=-1)
  if kind == "residual":
    return outs[l - 1] + _below(l - 1, x, outs, project)
  return outs[l - 1]


def top(kind: VerticalSkip, x: jax.Array, outs: list[jax.Array], project: Project) -> jax.Array:
  """What the readout reads."""
  if kind == "dense":
    return jnp.concatenate(outs, axis=-1)
  if kind == "residual":
    return outs[-1] + _below(len(outs) - 1, x, outs, project)
  return outs[-1]


def _below(l: int, x: jax.Array, outs: list[jax.Array], project: Project) -> jax.Array:
  """h^(l-1), with h^(-1) = x W_p: the residual partner of h^(l)."""
  if l > 0:
    return outs[l - 1]
  return x if project is None else project(x)
