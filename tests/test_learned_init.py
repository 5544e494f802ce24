"""A learned initial state (config.model.learned_initial_state): one `carry_init` parameter
per layer holding (h_0, c_0, ...), trained from zeros, where every execution path starts."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models

B, T, F, H, O = 3, 6, 3, 4, 2
TOL = dict(atol=1e-5, rtol=1e-5)
CELLS = ("lstm", "gru", "rnn")
WIDTHS = {"lstm": 2 * H, "gru": H, "rnn": H}  # (h_0, c_0) for lstm


def build(cell: str, *, out=O, **cfg):
  c = dict(cell=cell, hidden_size=H, num_layers=2, engine="scan")
  c.update(cfg)
  return models.build(c, in_features=F, out_features=out, rngs=nnx.Rngs(0))


def data(seed: int = 42):
  rng = np.random.default_rng(seed)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask = jnp.arange(T)[None, :] < jnp.asarray([T, 4, 1])[:, None]
  return xs, mask


def set_carry_init(model, seed: int = 1):
  """Random nonzero (h_0, c_0, ...) in every layer; returns them."""
  rng = np.random.default_rng(seed)
  values = []
  for cell in model.layers:
    v = jnp.asarray(rng.uniform(-0.9, 0.9, size=cell.carry_init[...].shape), jnp.float32)
    cell.carry_init[...] = v
    values.append(v)
  return values


@pytest.mark.parametrize("cell", CELLS)
def test_one_parameter_per_layer_starting_at_zero(cell):
  model = build(cell, learned_initial_state=True)
  plain = build(cell)
  for l in range(2):
    p = model.layers[l].carry_init
    assert isinstance(p, nnx.Param)
    assert p[...].shape == (WIDTHS[cell],)
    np.testing.assert_array_equal(p[...], 0.0)
    assert not hasattr(plain.layers[l], "carry_init")
  # The extra parameter draws no randomness: every other parameter is as without it.
  got = nnx.state(model, nnx.Param).to_pure_dict()
  want = nnx.state(plain, nnx.Param).to_pure_dict()
  for l in range(2):
    got["layers"][l].pop("carry_init")
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  # So at initialisation the model is the zero-state model.
  xs, mask = data()
  np.testing.assert_array_equal(model(xs, mask), plain(xs, mask))
  for a, b in zip(jax.tree.leaves(model.initial_state(B)), jax.tree.leaves(plain.initial_state(B))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("engine", ["scan", "vjp", "vjp_hoisted", "time_major"])
@pytest.mark.parametrize("cell", CELLS)
def test_carry_init_receives_a_gradient(cell, engine):
  kw = dict(execution="time_major") if engine == "time_major" else dict(engine=engine)
  model = build(cell, learned_initial_state=True, **kw)
  xs, mask = data()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  w = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, O)), jnp.float32)
  g = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(xs, mask) * w))(
      params.to_pure_dict())
  for l in range(2):
    gl = np.asarray(g["layers"][l]["carry_init"])
    assert gl.shape == (WIDTHS[cell],)
    assert np.all(np.isfinite(gl)) and np.abs(gl).max() > 1e-4, (l, gl)
    if cell == "lstm":  # both h_0 and c_0 are trained
      assert np.abs(gl[:H]).max() > 1e-5 and np.abs(gl[H:]).max() > 1e-5
  if engine != "scan":  # the same gradient as plain autodiff
    ref = build(cell, learned_initial_state=True)
    gd, pr, rr = nnx.split(ref, nnx.Param, ...)
    want = jax.grad(lambda p: jnp.sum(nnx.merge(gd, p, rr)(xs, mask) * w))(pr.to_pure_dict())
    for l in range(2):
      np.testing.assert_allclose(g["layers"][l]["carry_init"], want["layers"][l]["carry_init"],
                                 **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_initial_state_is_the_learned_value_broadcast(cell):
  model = build(cell, learned_initial_state=True)
  values = set_carry_init(model)
  state = model.initial_state(B)
  assert len(state) == 2
  for l, (carry, v) in enumerate(zip(state, values)):
    parts = (v[:H], v[H:]) if cell == "lstm" else (v,)
    assert len(jax.tree.leaves(carry)) == len(parts)
    for got, want in zip(jax.tree.leaves(carry), parts):
      assert got.shape == (B, H)
      np.testing.assert_array_equal(got, jnp.broadcast_to(want, (B, H)))


@pytest.mark.parametrize("cell", CELLS)
def test_full_call_and_streaming_start_from_the_learned_state(cell):
  model = build(cell, learned_initial_state=True)
  plain = build(cell)
  set_carry_init(model)
  start = model.initial_state(B)
  xs, mask = data()
  ys, final = model(xs, mask, return_state=True)
  # The zero-state model with the learned state given explicitly.
  want, want_final = plain(xs, mask, state=start, return_state=True)
  np.testing.assert_allclose(ys, want, **TOL)
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(want_final)):
    np.testing.assert_allclose(a, b, **TOL)
  assert float(jnp.abs(ys - plain(xs, mask)).max()) > 1e-3  # the start matters
  # Time-major execution and streaming start from it too.
  tm = build(cell, learned_initial_state=True, execution="time_major")
  set_carry_init(tm)
  np.testing.assert_allclose(tm(xs, mask), ys, **TOL)
  state, streamed = model.initial_state(B), []
  for t in range(T):
    state, y = model.step(state, xs[:, t], mask[:, t])
    streamed.append(y)
  np.testing.assert_allclose(jnp.stack(streamed, axis=1), ys, **TOL)
  # A fully padded row keeps the learned state as its final state.
  empty, empty_final = model(xs, mask.at[2].set(False), return_state=True)
  assert np.all(np.asarray(empty[2]) == 0.0)
  for got, init in zip(jax.tree.leaves(empty_final), jax.tree.leaves(start)):
    np.testing.assert_array_equal(got[2], init[2])


def test_lstm_c0_is_used():
  # Only c_0 nonzero: the outputs change, and equal the zero-state model given (0, c_0).
  model, plain = build("lstm", learned_initial_state=True), build("lstm")
  c0 = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, size=(H,)), jnp.float32)
  model.layers[0].carry_init[...] = jnp.concatenate([jnp.zeros((H,)), c0])
  xs, mask = data()
  ys = model(xs, mask)
  assert float(jnp.abs(ys - plain(xs, mask)).max()) > 1e-3
  state = plain.initial_state(B)
  state = (state[0]._replace(c=jnp.broadcast_to(c0, (B, H))), state[1])
  np.testing.assert_allclose(ys, plain(xs, mask, state=state), **TOL)


def test_explicit_state_overrides_the_learned_one():
  model, plain = build("gru", learned_initial_state=True), build("gru")
  set_carry_init(model)
  xs, mask = data()
  zeros = plain.initial_state(B)
  np.testing.assert_allclose(model(xs, mask, state=zeros), plain(xs, mask), **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_skip_history_starts_at_zero(cell):
  # With a horizontal skip the carry also holds h_{t-k..t-1}; only (h_0, c_0) are learned.
  model = build(cell, learned_initial_state=True, horizontal_skip="residual", skip_span=2)
  assert model.layers[0].carry_init[...].shape == (WIDTHS[cell],)
  values = set_carry_init(model)
  state = model.initial_state(B)
  for carry, v in zip(state, values):
    np.testing.assert_array_equal(carry[0], jnp.broadcast_to(v[:H], (B, H)))
    assert carry.history.shape == (B, 2 * H)
    np.testing.assert_array_equal(carry.history, 0.0)
  xs, mask = data()
  ys = model(xs, mask)
  state_s, streamed = model.initial_state(B), []
  for t in range(T):
    state_s, y = model.step(state_s, xs[:, t], mask[:, t])
    streamed.append(y)
  np.testing.assert_allclose(jnp.stack(streamed, axis=1), ys, **TOL)


def test_trained_by_the_trainer(tmp_path):
  # One optimizer step moves carry_init off zero in every layer.
  from configs import default
  from rnn_research.training import train
  config = default.base("kalman")
  config.task.length, config.task.eval_size = 8, 4
  config.model.update(cell="gru", hidden_size=H, num_layers=2, learned_initial_state=True)
  config.train.batch_size = 4
  task, graphdef, state, optimizer = train.init_state(config)
  step = jax.jit(train.train_step_fn(graphdef, task, optimizer))
  new, _ = step(state, task.train_batch(0), np.uint32(0), np.float32(config.train.learning_rate))
  for l in range(2):
    np.testing.assert_array_equal(state["params"]["layers"][l]["carry_init"], 0.0)
    assert float(jnp.abs(new["params"]["layers"][l]["carry_init"]).max()) > 1e-6
