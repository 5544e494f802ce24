"""Sampling the next token from logits: temperature, top-k, nucleus (top-p), a categorical draw.

All functions are pure and jit-able; `temperature`, `top_k` and `top_p` may be traced scalars
(no recompilation per value). Filters work on the last axis, over V tokens, and drop a token by
setting its logit to -inf (probability 0 after the softmax):

  tempered    z_i = l_i / T                                  (T > 0)
  top-k       keep i iff rank(z_i) < k                       (k = 0: keep all)
  top-p       keep the smallest prefix S of the tokens sorted by p_i = softmax(z)_i (largest
              first) with sum_{i in S} p_i >= P              (P = 1: keep all)
  draw        i ~ Categorical(softmax(kept z))               (renormalised over the kept tokens)

Ranks come from a stable descending sort, so ties are broken deterministically: among equal
logits the lower token id ranks first (top-k keeps exactly k tokens; top-p's prefix ends at a
fixed token). Top-p runs on the tempered, top-k-filtered distribution (the usual order).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Slack on the top-p threshold: a prefix whose float32 sum rounds to just under P still counts.
TOP_P_SLACK = 1e-6


def ranks(logits: jax.Array) -> jax.Array:
  """rank_i = the position of token i in the stable descending sort (0 = largest; ties: lower
  id first). int32 [..., V]."""
  order = jnp.argsort(-logits, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True).astype(jnp.int32)


def top_k_filter(logits: jax.Array, k: int | jax.Array) -> jax.Array:
  """Keep exactly the k largest logits (rank < k), the others -> -inf; k = 0 keeps all."""
  keep = (ranks(logits) < k) | (k <= 0)
  return jnp.where(keep, logits, -jnp.inf)


def top_p_filter(logits: jax.Array, p: float | jax.Array) -> jax.Array:
  """Nucleus: keep the smallest set of most probable tokens whose probabilities sum to >= p.

  With p_(1) >= p_(2) >= ... the sorted softmax(logits), token (j) is kept iff
  sum_{i<j} p_(i) < p (the mass before it has not reached p yet), so the kept prefix is the
  shortest one reaching p; the most probable token is always kept. p >= 1 keeps all.
  """
  order = jnp.argsort(-logits, axis=-1, stable=True)
  sorted_probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), order, axis=-1)
  before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs           # exclusive cumsum
  keep_sorted = before < p - TOP_P_SLACK
  keep_sorted = keep_sorted.at[..., 0].set(True)
  keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
  return jnp.where(keep | (p >= 1.0), logits, -jnp.inf)


def filter_logits(logits: jax.Array, temperature: float | jax.Array = 1.0,
                  top_k: int | jax.Array = 0, top_p: float | jax.Array = 1.0) -> jax.Array:
  """z = logits / T, then top-k, then top-p: the logits of the distribution to draw from."""
  z = logits / temperature
  return top_p_filter(top_k_filter(z, top_k), top_p)


def probabilities(logits: jax.Array, temperature: float | jax.Array = 1.0,
                  top_k: int | jax.Array = 0, top_p: float | jax.Array = 1.0) -> jax.Array:
  """softmax(filter_logits(...)): the renormalised sampling distribution (0 where dropped)."""
  return jax.nn.softmax(filter_logits(logits, temperature, top_k, top_p), axis=-1)


def draw(key: jax.Array, logits: jax.Array, temperature: float | jax.Array = 1.0,
         top_k: int | jax.Array = 0, top_p: float | jax.Array = 1.0) -> jax.Array:
  """One token id per row of logits [..., V] -> int [...], i ~ probabilities(...)."""
  return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p), axis=-1)


def draw_rows(keys: jax.Array, logits: jax.Array, temperature: float | jax.Array = 1.0,
              top_k: int | jax.Array = 0, top_p: float | jax.Array = 1.0) -> jax.Array:
  """keys [N], logits [N, V] -> ids [N]: row n drawn with its own key (independent of N)."""
  return jax.vmap(lambda k, l: draw(k, l, temperature, top_k, top_p))(keys, logits)


def check(temperature: float, top_k: int, top_p: float, vocab_size: int | None = None) -> None:
  """ValueError naming the flag and its valid range for a bad temperature, top_k or top_p."""
  if not temperature > 0:
    raise ValueError(f"--temperature must be > 0, got {temperature}")
  if top_k < 0 or (vocab_size is not None and top_k > vocab_size):
    upper = "the vocabulary size" if vocab_size is None else f"the vocabulary size {vocab_size}"
    raise ValueError(f"--top_k must be in [0, {upper}] (0 = off), got {top_k}")
  if not 0 < top_p <= 1:
    raise ValueError(f"--top_p must be in (0, 1] (1 = off), got {top_p}")
