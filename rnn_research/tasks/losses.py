"""Weighted per-position losses shared by every task (jittable; numpy arrays work too).

Every loss is a weighted mean over (batch, time) positions,

  L = sum_{b,t} w_{b,t} l_{b,t} / sum_{b,t} w_{b,t},

where w is the batch's `weight` (0 on padding and on positions that are not scored), so the
training loss and the pooled eval loss share one definition.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def per_position_mse(ys: jax.Array, y: jax.Array) -> jax.Array:
  """Squared error averaged over the output axis: [B, T, O] x2 -> [B, T]."""
  diff = jnp.asarray(ys, jnp.float32) - jnp.asarray(y, jnp.float32)
  return jnp.mean(jnp.square(diff), axis=-1)


def per_position_xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """-log softmax(logits)[label] in nats: logits [B, T, C], labels int [B, T] -> [B, T]."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  idx = jnp.asarray(labels, jnp.int32)[..., None]
  return -jnp.take_along_axis(logp, idx, axis=-1)[..., 0]


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
  """sum(weight * values) / sum(weight); 0 when every weight is 0."""
  w = jnp.asarray(weight, jnp.float32)
  return jnp.sum(w * values) / jnp.maximum(jnp.sum(w), 1e-12)


def weighted_mse(ys: jax.Array, y: jax.Array, weight: jax.Array) -> jax.Array:
  """Weighted mean squared error (mean over output features)."""
  return weighted_mean(per_position_mse(ys, y), weight)


def weighted_xent(logits: jax.Array, labels: jax.Array, weight: jax.Array) -> jax.Array:
  """Weighted mean cross-entropy in nats."""
  return weighted_mean(per_position_xent(logits, labels), weight)


def weighted_accuracy(logits: jax.Array, labels: jax.Array, weight: jax.Array) -> jax.Array:
  """Weighted fraction of positions where argmax(logits) is the label."""
  hit = jnp.argmax(jnp.asarray(logits), axis=-1) == jnp.asarray(labels, jnp.int32)
  return weighted_mean(hit.astype(jnp.float32), weight)
