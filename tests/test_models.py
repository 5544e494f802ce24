"""The stacked model's numerical contract, for every cell and LSTM variant.

streaming == full call, layer_major == time_major, causality, masking invariance, state
continuation, `out_features=None`, and jit. Per config, the calls every check compares are
computed once (`results`) by a few jitted functions, each compiled once and reused.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models
from rnn_research.core.cells import LSTM_VARIANTS

import param_noise

B, T, F, H, O = 3, 6, 3, 4, 2
LENGTHS = (6, 3, 1)
TOL = dict(atol=1e-5, rtol=1e-5)

CONFIGS = {
    "rnn": dict(cell="rnn"),
    "rnn_relu_identity_init": dict(cell="rnn", activation="relu", recurrent_init="identity",
                                   recurrent_scale=0.9),
    "rnn_mlp_gelu": dict(cell="rnn", transition="mlp", mlp_hidden=5, activation="gelu"),
    "gru_softsign_readout_mlp": dict(cell="gru", activation="softsign", readout="mlp",
                                     readout_hidden=3),
    "lstm_relu_scan_hoisted_remat": dict(cell="lstm", activation="relu", engine="scan_hoisted",
                                         remat=True),
    "lstm_lecture_peephole": dict(cell="lstm", lstm_variant="lecture", lecture_peephole=True),
}
CONFIGS.update({f"lstm_{v}": dict(cell="lstm", lstm_variant=v) for v in LSTM_VARIANTS.names()})
NAMES = sorted(CONFIGS)


def test_every_lstm_variant_is_covered():
  assert len(LSTM_VARIANTS.names()) == 11
  assert all(f"lstm_{v}" in CONFIGS for v in LSTM_VARIANTS.names())


def build(name: str, **overrides):
  cfg = dict(hidden_size=H, num_layers=2, **CONFIGS[name])
  out = overrides.pop("out_features", O)
  cfg.update(overrides)
  model = models.build(cfg, in_features=F, out_features=out, rngs=nnx.Rngs(0))
  # Every parameter off its initial value (zero biases, e.g. the readout's, hide bugs).
  return param_noise.perturb(model, 0.1)


def data():
  rng = np.random.default_rng(42)  # numpy: no compile per random shape
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask = jnp.arange(T)[None, :] < jnp.asarray(LENGTHS)[:, None]
  pad = jnp.asarray(100.0 * rng.normal(size=(B, T, F)), jnp.float32)
  perturb = jnp.asarray(3.0 * rng.normal(size=(B, F)), jnp.float32)
  return xs, mask, pad, perturb


T0S = (0, 2, T - 1)  # perturbed steps of the causality check
HALF = T // 2


def jitted(model):
  """(call, step): the model's call and streaming step as jitted functions of the split model
  (jax.jit via nnx.split / nnx.merge). Each compiles once per input signature, so the many
  calls below share a handful of compiles (the file's cost is compile time)."""
  graphdef, params = nnx.split(model)

  @jax.jit
  def call(params, xs, mask, state):
    return nnx.merge(graphdef, params)(xs, mask, state=state, return_state=True)

  @jax.jit
  def step(params, state, x_t, mask_t):
    return nnx.merge(graphdef, params).step(state, x_t, mask_t)

  return functools.partial(call, params), functools.partial(step, params)


@functools.lru_cache(maxsize=None)
def results(name: str) -> dict:
  """Every call the tests compare, for the layer-major model of `name` and its time-major twin
  (same weights)."""
  model = build(name)
  twin = build(name, execution="time_major")
  assert not model.time_major and twin.time_major
  call, step = jitted(model)
  twin_call, _ = jitted(twin)
  xs, mask, pad, perturb = data()
  state0 = model.initial_state(B)
  r = dict(model=model, xs=xs, mask=mask, state0=state0)
  r["ys"], r["final"] = call(xs, mask, state0)
  r["ys_nomask"], r["final_nomask"] = call(xs, None, None)  # default mask and state
  r["tm"], r["tm_final"] = twin_call(xs, mask, state0)
  r["tm_nomask"], r["tm_final_nomask"] = twin_call(xs, None, None)
  # Streaming, unmasked (mask_t=None) and masked.
  states, ys, state = [], [], state0
  for t in range(T):
    state, y = step(state, xs[:, t], None)
    states.append(state)
    ys.append(y)
  r["stream_states"], r["stream_ys"] = states, jnp.stack(ys, axis=1)
  ys, state = [], state0
  for t in range(T):
    state, y = step(state, xs[:, t], mask[:, t])
    ys.append(y)
  r["stream_masked_ys"], r["stream_masked_final"] = jnp.stack(ys, axis=1), state
  # Causality: x_t0 perturbed.
  r["causal"] = [call(xs.at[:, t0].add(perturb), None, None)[0] for t0 in T0S]
  # Masking: other padded values; shorter padding; a fully padded sequence.
  padded = jnp.where(mask[..., None], xs, pad)
  r["padded"], r["padded_final"] = call(padded, mask, state0)
  r["short"], r["short_final"] = call(xs[:, :HALF], mask[:, :HALF], state0)
  r["state_half"] = jax.tree.map(lambda a: a + 0.5, state0)
  r["empty"], r["empty_final"] = call(xs, mask.at[2].set(False), r["state_half"])
  # Continuation: the second half from the first half's final state.
  r["second"], r["second_final"] = call(xs[:, HALF:], mask[:, HALF:], r["short_final"])
  return r


def assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_finite(name):
  r = results(name)
  assert r["ys"].shape == (B, T, O)
  assert r["ys"].dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(r["ys"])))
  assert len(r["final"]) == 2  # one carry per layer
  for carry in r["final"]:
    assert carry[0].shape == (B, H)
  # The sequence actually carries information: outputs vary over time.
  assert float(jnp.abs(jnp.diff(r["ys_nomask"], axis=1)).max()) > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_streaming_equals_full_call(name):
  r = results(name)
  np.testing.assert_allclose(r["stream_ys"], r["ys_nomask"], **TOL)
  assert_trees_close(r["stream_states"][-1], r["final_nomask"])
  np.testing.assert_allclose(r["stream_masked_ys"], r["ys"], **TOL)
  assert_trees_close(r["stream_masked_final"], r["final"])


@pytest.mark.parametrize("name", NAMES)
def test_layer_major_equals_time_major(name):
  r = results(name)
  np.testing.assert_allclose(r["tm"], r["ys"], **TOL)
  assert_trees_close(r["tm_final"], r["final"])
  np.testing.assert_allclose(r["tm_nomask"], r["ys_nomask"], **TOL)
  assert_trees_close(r["tm_final_nomask"], r["final_nomask"])


@pytest.mark.parametrize("name", NAMES)
def test_causality(name):
  r = results(name)
  for t0, ys in zip(T0S, r["causal"]):
    np.testing.assert_allclose(ys[:, :t0], r["ys_nomask"][:, :t0], atol=1e-6, rtol=1e-6,
                               err_msg=f"x_{t0} changed an earlier output")
    assert float(jnp.abs(ys[:, t0] - r["ys_nomask"][:, t0]).max()) > 1e-4, t0


@pytest.mark.parametrize("name", NAMES)
def test_mask_padded_values_do_not_matter(name):
  r = results(name)
  valid = np.asarray(r["mask"])
  ys, padded = np.asarray(r["ys"]), np.asarray(r["padded"])
  np.testing.assert_allclose(padded[valid], ys[valid], atol=1e-6, rtol=1e-6)
  assert_trees_close(r["padded_final"], r["final"], atol=1e-6, rtol=1e-6)
  # Outputs past each sequence's end are exactly zero.
  assert np.all(padded[~valid] == 0.0) and np.all(ys[~valid] == 0.0)
  # Valid outputs are those of the unmasked call (a sequence ignores its own padding).
  np.testing.assert_allclose(ys[valid], np.asarray(r["ys_nomask"])[valid], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_mask_padding_length_does_not_matter(name):
  r = results(name)
  np.testing.assert_allclose(r["short"], r["ys"][:, :HALF], **TOL)
  # Sequences that end within the first half have the same frozen final state either way.
  for b, length in enumerate(LENGTHS):
    if length <= HALF:
      for long, short in zip(jax.tree.leaves(r["final"]), jax.tree.leaves(r["short_final"])):
        np.testing.assert_allclose(long[b], short[b], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_mask_final_state_is_state_at_last_valid_step(name):
  r = results(name)
  for b, length in enumerate(LENGTHS):
    expected = r["stream_states"][length - 1]
    for got, want in zip(jax.tree.leaves(r["final"]), jax.tree.leaves(expected)):
      np.testing.assert_allclose(got[b], want[b], **TOL)
  # A fully padded sequence keeps its initial state exactly and outputs zeros.
  assert np.all(np.asarray(r["empty"][2]) == 0.0)
  for got, init in zip(jax.tree.leaves(r["empty_final"]), jax.tree.leaves(r["state_half"])):
    np.testing.assert_array_equal(got[2], init[2])


@pytest.mark.parametrize("name", NAMES)
def test_state_kwarg_continues_a_sequence(name):
  r = results(name)
  np.testing.assert_allclose(jnp.concatenate([r["short"], r["second"]], axis=1), r["ys"], **TOL)
  assert_trees_close(r["second_final"], r["final"])


@pytest.mark.parametrize("name", ["rnn_mlp_gelu", "gru_softsign_readout_mlp", "lstm_fgr"])
def test_no_readout_returns_top_hidden(name):
  model = build(name, out_features=None)
  assert model.readout is None
  xs, mask, _, _ = data()
  hs, final = model(xs, return_state=True)
  assert hs.shape == (B, T, H)
  np.testing.assert_allclose(hs[:, -1], final[-1][0], **TOL)  # top layer's h_T
  hs_masked = model(xs, mask)
  assert np.all(np.asarray(hs_masked)[~np.asarray(mask)] == 0.0)
  state, h_0 = model.step(model.initial_state(B), xs[:, 0])
  assert h_0.shape == (B, H)
  np.testing.assert_allclose(h_0, hs[:, 0], **TOL)


@pytest.mark.parametrize("name", ["gru_softsign_readout_mlp", "lstm_fgr"])
def test_eager_call_equals_jit(name):
  r = results(name)
  model = r["model"]
  np.testing.assert_allclose(model(r["xs"]), r["ys_nomask"], **TOL)
  np.testing.assert_allclose(model(r["xs"], r["mask"]), r["ys"], **TOL)
  # nnx.jit on the module itself (results() used jax.jit with nnx.split / nnx.merge).
  ys = nnx.jit(lambda m, xs, mask: m(xs, mask))(model, r["xs"], r["mask"])
  np.testing.assert_allclose(ys, r["ys"], **TOL)
  state, y_0 = model.step(model.initial_state(B), r["xs"][:, 0])
  np.testing.assert_allclose(y_0, r["ys_nomask"][:, 0], **TOL)


def test_different_seeds_give_different_models():
  xs, *_ = data()
  a = models.build(dict(cell="lstm", hidden_size=H), F, O, rngs=nnx.Rngs(0))
  b = models.build(dict(cell="lstm", hidden_size=H), F, O, rngs=nnx.Rngs(1))
  c = models.build(dict(cell="lstm", hidden_size=H), F, O, rngs=nnx.Rngs(0))
  assert float(jnp.abs(a(xs) - b(xs)).max()) > 1e-4
  np.testing.assert_array_equal(a(xs), c(xs))
