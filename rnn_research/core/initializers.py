"""Recurrent-matrix initialisers: they set the starting gradient regime (lecture section 2).

Each `init(key, (rows, cols), scale)` returns one block of W_h; gated cells call it once per
gate block so that every gate's H x H matrix has the named structure.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rnn_research.core.registry import Registry

Init = Callable[[jax.Array, tuple[int, int], float], jax.Array]
RECURRENT_INITS: Registry[Init] = Registry("recurrent_init")


@RECURRENT_INITS.register("orthogonal")
def orthogonal(key: jax.Array, shape: tuple[int, int], scale: float) -> jax.Array:
  """scale * Q, Q orthogonal: every singular value equals `scale`."""
  return jax.nn.initializers.orthogonal(scale)(key, shape, jnp.float32)


@RECURRENT_INITS.register("identity")
def identity(key: jax.Array, shape: tuple[int, int], scale: float) -> jax.Array:
  """scale * I (IRNN, Le et al. 2015: identity-initialised ReLU RNNs)."""
  del key
  return scale * jnp.eye(*shape, dtype=jnp.float32)


@RECURRENT_INITS.register("normal")
def normal(key: jax.Array, shape: tuple[int, int], scale: float) -> jax.Array:
  """N(0, scale^2 / rows): by the circular law the spectral radius tends to `scale`."""
  return scale * jax.random.normal(key, shape, jnp.float32) / jnp.sqrt(shape[0])


@RECURRENT_INITS.register("lecun")
def lecun(key: jax.Array, shape: tuple[int, int], scale: float) -> jax.Array:
  """scale * LeCun normal (truncated normal, variance 1 / fan_in)."""
  return scale * jax.nn.initializers.lecun_normal()(key, shape, jnp.float32)


def input_init(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """W_x: LeCun normal, as Flax's and Haiku's dense layers."""
  return jax.nn.initializers.lecun_normal()(key, shape, jnp.float32)


def blocks(init: Init, key: jax.Array, rows: int, cols: int, num_blocks: int,
           scale: float) -> jax.Array:
  """[rows, num_blocks * cols]: `num_blocks` independent draws of `init`, side by side."""
  keys = jax.random.split(key, num_blocks)
  return jnp.concatenate([init(k, (rows, cols), scale) for k in keys], axis=-1)
