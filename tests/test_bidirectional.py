"""Bidirectional models (config.model.bidirectional = concat | sum).

The backward stack reads each row's valid part from its end: against a reference built from
two unidirectional models on the compacted valid steps, padding never matters, the backward
half at t depends on x_{t..n-1} only, execution paths agree, resets make a packed row equal
its episodes, and `bidirectional.reversal` is an involution on valid positions.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import bidirectional, models

import param_noise

B, T, F, H, O = 3, 7, 3, 4, 2
TOL = dict(atol=1e-5, rtol=1e-5)
CELLS = ("lstm", "gru", "rnn")
KEY = jax.random.PRNGKey(3)


def perturb(model, seed: int = 5):
  return param_noise.perturb(model, 0.2, seed)


def config(cell: str, **cfg):
  c = dict(cell=cell, hidden_size=H, num_layers=2, engine="vjp", bidirectional="concat")
  c.update(cfg)
  return c


def build(cell: str, *, out=O, **cfg):
  return perturb(models.build(config(cell, **cfg), in_features=F, out_features=out,
                              rngs=nnx.Rngs(0)))


def build_with_halves(cell: str, **cfg):
  """A bidirectional model (no readout) and unidirectional models holding its forward and
  backward stacks' weights."""
  model = build(cell, out=None, **cfg)
  plain = config(cell, **{**cfg, "bidirectional": "none"})
  fw = models.build(plain, F, None, nnx.Rngs(1))
  bw = models.build(plain, F, None, nnx.Rngs(2))
  nnx.update(fw.layers, nnx.state(model.layers, nnx.Param))
  nnx.update(bw, nnx.state(model.reverse_stack, nnx.Param))
  return model, fw, bw


def data(seed: int = 42):
  rng = np.random.default_rng(seed)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask = np.ones((B, T), bool)
  mask[1, 5:] = False                # padded at the end
  mask[2, [0, 3, 6]] = False         # holes, padding first and last
  return xs, jnp.asarray(mask)


def compact_reference(fw, bw, xs, mask, merge):
  """Per row: the forward model on the valid steps in order, the backward one on them
  reversed (re-reversed), scattered back to the valid positions; zeros at padding. The
  compacted rows run as one batch, each padded at its end (unidirectional padding
  invariance: tests/test_models.py)."""
  xs, mask = np.asarray(xs), np.asarray(mask)
  fwd, rev = np.zeros_like(xs), np.zeros_like(xs)
  cmask = np.zeros(mask.shape, bool)
  for b in range(xs.shape[0]):
    idx = np.flatnonzero(mask[b])
    fwd[b, :len(idx)], rev[b, :len(idx)], cmask[b, :len(idx)] = xs[b, idx], xs[b, idx[::-1]], True
  f = np.asarray(caller(fw)(jnp.asarray(fwd), jnp.asarray(cmask)))
  r = np.asarray(caller(bw)(jnp.asarray(rev), jnp.asarray(cmask)))
  width = 2 * H if merge == "concat" else H
  out = np.zeros(xs.shape[:2] + (width,), np.float32)
  for b in range(xs.shape[0]):
    idx = np.flatnonzero(mask[b])
    n = len(idx)
    pair = (f[b, :n], r[b, :n][::-1])
    out[b, idx] = np.concatenate(pair, -1) if merge == "concat" else pair[0] + pair[1]
  return out


def caller(model):
  """The jitted call (xs, mask, resets=None, key=None) -> ys; one compile per signature."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def call(params, xs, mask, resets, key):
    return nnx.merge(graphdef, params, rest)(xs, mask, resets=resets, key=key)

  return lambda xs, mask=None, resets=None, key=None: call(params, xs, mask, resets, key)


def assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


# ------------------------------------------------------------------------------ the reference


@pytest.mark.parametrize("merge", ["concat", "sum"])
@pytest.mark.parametrize("cell", CELLS)
def test_equals_two_unidirectional_stacks_on_the_valid_steps(cell, merge):
  model, fw, bw = build_with_halves(cell, bidirectional=merge)
  call = caller(model)
  xs, mask = data()
  np.testing.assert_allclose(call(xs, mask), compact_reference(fw, bw, xs, mask, merge), **TOL)
  # All valid: the whole row forwards and backwards.
  ones = jnp.ones((B, T), bool)
  np.testing.assert_allclose(call(xs, ones), compact_reference(fw, bw, xs, ones, merge), **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_padding_never_matters(cell):
  model = build(cell)
  call = caller(model)
  xs, mask = data()
  pad = jnp.asarray(50.0 * np.random.default_rng(1).normal(size=xs.shape), jnp.float32)
  ys = np.asarray(call(xs, mask))
  padded = np.asarray(call(jnp.where(mask[..., None], xs, pad), mask))
  valid = np.asarray(mask)
  np.testing.assert_allclose(padded[valid], ys[valid], atol=1e-6, rtol=1e-6)
  assert np.all(padded[~valid] == 0.0) and np.all(ys[~valid] == 0.0)
  # A padded row equals the same row cut to its length.
  np.testing.assert_allclose(ys[1, :5], np.asarray(model(xs[1:2, :5]))[0], **TOL)


@pytest.mark.parametrize("vertical_skip,per_layer", [("none", 1), ("dense", 2)])
def test_output_widths(vertical_skip, per_layer):
  xs, mask = data()
  kw = dict(vertical_skip=vertical_skip)

  def shape(model):  # traced, not compiled
    return jax.eval_shape(lambda x, m: model(x, m), xs, mask).shape

  assert shape(build("gru", out=None, **kw)) == (B, T, 2 * H * per_layer)
  assert shape(build("gru", out=None, bidirectional="sum", **kw)) == (B, T, H * per_layer)
  for merge, width in (("concat", 2 * H * per_layer), ("sum", H * per_layer)):
    model = build("gru", bidirectional=merge, **kw)
    assert model.readout.out.kernel[...].shape == (width, O)
    assert shape(model) == (B, T, O)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_half_depends_on_the_future_only(cell):
  model = build(cell, out=None)
  call = caller(model)
  xs, _ = data()
  lengths = (T, 5, 3)
  mask = jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]
  ys = np.asarray(call(xs, mask))
  kick = jnp.asarray(3.0 * np.random.default_rng(2).normal(size=(B, F)), jnp.float32)
  for t0 in (0, 2, 4):
    got = np.asarray(call(xs.at[:, t0].add(kick), mask))
    for b, n in enumerate(lengths):
      if t0 >= n:  # a padded step: nothing changes
        np.testing.assert_array_equal(got[b], ys[b])
        continue
      fwd, bwd = got[b, :, :H] - ys[b, :, :H], got[b, :, H:] - ys[b, :, H:]
      np.testing.assert_allclose(fwd[:t0], 0.0, atol=1e-6)          # forward: the past only
      np.testing.assert_allclose(bwd[t0 + 1:], 0.0, atol=1e-6)      # backward: the future only
      assert np.abs(fwd[t0]).max() > 1e-4 and np.abs(bwd[t0]).max() > 1e-4, (b, t0)
      assert np.abs(bwd[:t0 + 1]).max(axis=-1).min() > 1e-6, (b, t0)  # every earlier step


# ------------------------------------------------------------------------------ execution paths


RATES = dict(dropout=0.3, recurrent_dropout=0.3, recurrent_dropout_inputs=True)
RESETS = np.zeros((B, T), bool)
RESETS[0, 3] = RESETS[1, 2] = RESETS[2, 4] = True


def outputs_and_grads(model, xs, mask, resets, key):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  w = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, O)), jnp.float32)

  def loss(p, x):
    ys = nnx.merge(graphdef, p, rest)(x, mask, resets=resets, key=key)
    return jnp.sum(ys * w), ys

  (_, ys), g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
      params.to_pure_dict(), xs)
  return ys, g


@functools.lru_cache(maxsize=None)
def cached(cell: str, engine: str, execution: str, dropout: bool):
  """(outputs, grads) of a bidirectional model with mask, resets (and dropout)."""
  model = build(cell, engine=engine, execution=execution, learned_initial_state=True,
                **(RATES if dropout else {}))
  xs, mask = data()
  return outputs_and_grads(model, xs, mask, jnp.asarray(RESETS), KEY if dropout else None)


@pytest.mark.parametrize("cell,dropout", [("lstm", True), ("gru", True), ("rnn", False)])
def test_layer_major_equals_time_major(cell, dropout):
  lm, tm = cached(cell, "scan", "layer_major", dropout), cached(cell, "scan", "time_major", dropout)
  np.testing.assert_allclose(tm[0], lm[0], **TOL)
  assert_trees_close(tm[1], lm[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell,engine,dropout", [("lstm", "vjp", True), ("gru", "vjp", True),
                                                 ("rnn", "vjp", False),
                                                 ("lstm", "vjp_hoisted", False)])
def test_custom_vjp_gradients_equal_scan(cell, engine, dropout):
  got, want = cached(cell, engine, "layer_major", dropout), cached(cell, "scan", "layer_major",
                                                                   dropout)
  np.testing.assert_allclose(got[0], want[0], **TOL)
  assert_trees_close(got[1], want[1], atol=1e-5, rtol=1e-5)
  # Both stacks (and their learned initial states) are trained.
  for stack in (got[1][0]["layers"], got[1][0]["reverse_stack"]["layers"]):
    for l in range(2):
      assert float(jnp.abs(stack[l]["w_h"]).max()) > 1e-4
      assert float(jnp.abs(stack[l]["carry_init"]).max()) > 1e-4


def test_dropout_masks_of_the_two_stacks_differ():
  # Same rates, same key: the backward stack draws from its own key, not the forward one's.
  model, fw, bw = build_with_halves("rnn", recurrent_dropout=0.5, engine="scan")
  xs = data()[0]
  ys = np.asarray(model(xs, key=KEY))
  forward = np.asarray(fw(xs, key=KEY))
  np.testing.assert_allclose(ys[..., :H], forward, **TOL)
  back_same_key = np.asarray(bw(xs[:, ::-1], key=KEY))[:, ::-1]
  assert np.abs(ys[..., H:] - back_same_key).max() > 1e-4


def test_streaming_and_state_raise():
  model = build("lstm")
  xs, mask = data()
  with pytest.raises(ValueError, match="stream"):
    model.step(model.initial_state(B), xs[:, 0])
  with pytest.raises(ValueError, match="state"):
    model(xs, mask, state=model.initial_state(B))
  with pytest.raises(ValueError, match="state"):
    model(xs, mask, return_state=True)
  model.eval()
  with pytest.raises(ValueError, match="stream"):
    model.step(model.initial_state(B), xs[:, 0])


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_unknown_choice_raises(merge):
  with pytest.raises(ValueError, match="bidirectional 'both'"):
    build("gru", bidirectional="both")
  build("gru", bidirectional=merge)


# ------------------------------------------------------------------------------ packed episodes


LAYOUTS = {
    # Each row: segments ("ep", n) (an episode of n steps) or ("pad", n), end to end.
    "full": [[("ep", 4), ("ep", 4), ("ep", 4)], [("ep", 4), ("ep", 4), ("ep", 4)]],
    "ragged_padded": [[("ep", 4), ("ep", 4), ("ep", 2), ("pad", 2)],
                      [("ep", 5), ("ep", 3), ("ep", 4)]],
    "gaps": [[("ep", 3), ("pad", 1), ("ep", 4), ("pad", 1), ("ep", 3)],
             [("pad", 1), ("ep", 5), ("ep", 1), ("ep", 5)]],
}


def packed(layout):
  rows = LAYOUTS[layout]
  steps = sum(n for _, n in rows[0])
  rng = np.random.default_rng(9)
  xs = rng.normal(size=(len(rows), steps, F)).astype(np.float32)
  mask = np.zeros((len(rows), steps), bool)
  resets = np.zeros((len(rows), steps), bool)
  episodes = []
  for b, row in enumerate(rows):
    assert sum(n for _, n in row) == steps
    t = 0
    for kind, n in row:
      if kind == "ep":
        mask[b, t:t + n] = resets[b, t] = True
        episodes.append((b, t, n))
      t += n
  return xs, mask, resets, episodes


@pytest.mark.parametrize("cell,merge,engine,layout", [
    ("lstm", "concat", "vjp", "full"), ("lstm", "concat", "vjp", "ragged_padded"),
    ("lstm", "concat", "vjp", "gaps"), ("gru", "sum", "scan", "gaps"),
    ("rnn", "concat", "scan", "ragged_padded")])
def test_packed_row_equals_its_episodes(cell, merge, engine, layout):
  model = build(cell, bidirectional=merge, engine=engine, learned_initial_state=True)
  call = caller(model)
  xs, mask, resets, episodes = packed(layout)
  ys = np.asarray(call(jnp.asarray(xs), jnp.asarray(mask), jnp.asarray(resets)))
  assert np.all(ys[~mask] == 0.0)
  # The episodes as rows of their own, each padded at its end (a padded row equals the row
  # cut to its length: test_padding_never_matters).
  ep_xs = np.zeros((len(episodes),) + xs.shape[1:], np.float32)
  ep_mask = np.zeros(ep_xs.shape[:2], bool)
  for e, (b, t, n) in enumerate(episodes):
    ep_xs[e, :n], ep_mask[e, :n] = xs[b, t:t + n], True
  alone = np.asarray(call(jnp.asarray(ep_xs), jnp.asarray(ep_mask)))
  for e, (b, t, n) in enumerate(episodes):
    np.testing.assert_allclose(ys[b, t:t + n], alone[e, :n], **TOL,
                               err_msg=f"row {b}, t {t}, n {n}")
  # Without resets the episodes see each other (both directions).
  leaky = np.asarray(call(jnp.asarray(xs), jnp.asarray(mask), jnp.zeros(mask.shape, bool)))
  b, t, n = episodes[0]
  assert np.abs(leaky[b, t:t + n] - ys[b, t:t + n]).max() > 1e-4  # the first, from the future


# ------------------------------------------------------------------------------ _reversal


def test_reversal_is_an_involution_on_valid_positions():
  rng = np.random.default_rng(0)
  steps, batch = 9, 64
  mask = rng.random((steps, batch)) < 0.6
  mask[:, 0] = False   # a row of padding only
  mask[:, 1] = True    # a full row
  order = np.asarray(bidirectional.reversal(jnp.asarray(mask), steps, batch))
  assert order.shape == (steps, batch)
  cols = np.arange(batch)[None, :]
  np.testing.assert_array_equal(order[order, cols], np.broadcast_to(np.arange(steps)[:, None],
                                                                    (steps, batch)))
  np.testing.assert_array_equal(mask[order, cols], mask)  # valid <-> valid, padding <-> padding
  for b in range(batch):
    idx = np.flatnonzero(mask[:, b])
    np.testing.assert_array_equal(order[idx, b], idx[::-1])  # j-th valid <-> (n-1-j)-th
    pad = np.flatnonzero(~mask[:, b])
    np.testing.assert_array_equal(order[pad, b], pad)        # padding stays in place
  np.testing.assert_array_equal(np.asarray(bidirectional.reversal(None, 5, 2)),
                                np.broadcast_to(np.arange(5)[::-1, None], (5, 2)))


def test_reversed_resets_mark_the_episode_starts_of_the_reversed_rows():
  for layout in sorted(LAYOUTS):
    xs, mask, resets, episodes = packed(layout)
    m, r = jnp.asarray(mask.T), jnp.asarray(resets.T)
    order = bidirectional.reversal(m, *m.shape)
    rev = np.asarray(bidirectional.reversed_resets(r, m, order)).T
    for b in range(len(mask)):
      # Reversed, the episodes of row b start at the valid positions that hold their last
      # step; the first valid position may or may not be marked (it starts from h_0 anyway).
      valid = np.flatnonzero(mask[b])
      starts = {int(np.asarray(order)[t + n - 1, b]) for bb, t, n in episodes if bb == b}
      first = int(valid[0])
      got = set(np.flatnonzero(rev[b]).tolist())
      assert got - {first} == starts - {first}, (layout, b, got, starts)
      assert not np.any(rev[b] & ~mask[b])
