"""Sampling the next token from logits (temperature, top-k, nucleus (top-p), a categorical draw)
and generating text from a trained `charlm` run with the streaming `step` API (lecture 5.2).

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

Generation (`generate`, the CLI is rnn_research/sample.py) feeds the prompt one character at a
time, then each drawn character back as the next input. N samples run as one batch, one
`model.step` per character inside one jitted `lax.scan`; row n draws step t with the key
fold_in(fold_in(key(seed), n), t), so a row does not depend on N.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_research.training import run_loader

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


def check_flags(length: int, temperature: float, top_k: int, top_p: float, num_samples: int,
                vocab_size: int | None = None) -> None:
  """ValueError naming the flag and its valid range for any bad value."""
  if num_samples < 1:
    raise ValueError(f"--num_samples must be >= 1, got {num_samples}")
  if length < 0:
    raise ValueError(f"--length must be >= 0, got {length}")
  check(temperature, top_k, top_p, vocab_size)


def load(workdir: str) -> tuple[object, nnx.Module]:
  """(task, model in eval mode) from the latest checkpoint of the charlm run in `workdir`."""
  config = run_loader.load_config(workdir)
  if config.task.name != "charlm":
    raise ValueError(f"sampling needs a charlm run, {workdir} holds task {config.task.name!r}")
  return run_loader.load_model(workdir, config)


def row_keys(seed: int, num_samples: int) -> jax.Array:
  """One key per row, key_n = fold_in(key(seed), n): row n's key does not depend on N."""
  base = jax.random.key(seed)
  return jax.vmap(lambda n: jax.random.fold_in(base, n))(jnp.arange(num_samples))


@functools.partial(jax.jit, static_argnames=("graph", "vocab", "length"))
def _generate(graph, params, rest, vocab: int, prompt: jax.Array, keys: jax.Array, length: int,
              temperature, top_k, top_p) -> jax.Array:
  """prompt int [P >= 1], keys [N] -> ids int [N, length]: every step one batched model.step."""
  model = nnx.merge(graph, params, rest)
  n = keys.shape[0]
  one_hot = lambda ids: jax.nn.one_hot(ids, vocab, dtype=jnp.float32)

  def feed(carry, char):
    carry, _ = model.step(carry, one_hot(jnp.full((n,), char)))
    return carry, None

  def sample(carry, t):
    state, current = carry
    state, logits = model.step(state, one_hot(current))
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)
    nxt = draw_rows(step_keys, logits, temperature, top_k, top_p).astype(jnp.int32)
    return (state, nxt), nxt

  state, _ = jax.lax.scan(feed, model.initial_state(n), prompt[:-1])
  current = jnp.full((n,), prompt[-1], jnp.int32)
  _, out = jax.lax.scan(sample, (state, current), jnp.arange(length))
  return out.T


def generate_ids(model: nnx.Module, vocab: int, prompt_ids: np.ndarray, length: int,
                 keys: jax.Array, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> np.ndarray:
  """ids int [N, length] continuing `prompt_ids` (empty: id 0) over a one-hot vocabulary of
  `vocab` characters, row n drawn with keys[n]."""
  prompt = jnp.asarray(np.asarray(prompt_ids, np.int32).reshape(-1))
  if prompt.size == 0:
    prompt = jnp.zeros((1,), jnp.int32)
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  return np.asarray(_generate(graph, params, rest, vocab, prompt, keys, length,
                              jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p)))


def generate(workdir: str, prompt: str, length: int, temperature: float, seed: int = 0,
             num_samples: int = 1, top_k: int = 0, top_p: float = 1.0) -> list[str]:
  """`num_samples` continuations of `prompt`, `length` characters each, from `workdir`."""
  check_flags(length, temperature, top_k, top_p, num_samples)
  task, model = load(workdir)
  check_flags(length, temperature, top_k, top_p, num_samples, len(task.vocab))
  keys = row_keys(seed, num_samples)
  ids = generate_ids(model, len(task.vocab), task.encode(prompt), length, keys, temperature,
                     top_k, top_p)
  return [task.decode(row) for row in ids]
