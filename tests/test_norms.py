"""Each normalisation placement (lecture 2.1.3) computes its defining statistic.

DESIGN.md "Norm statistics, precisely": `mini_layer`/`mini_vertical` normalise one hidden vector
over its features at one step; `layer` one layer's whole output sequence of one example over
(time, features) with running averages for streaming / eval_norm_stats='running'; `batch` the
valid (batch, time) positions per feature; `vertical` the stack of L hidden vectors at one step
across layers, the normalised states being the carries.

Runs eagerly (`jax.disable_jit()`): a handful of calls per test at tiny shapes, where compiling
would dominate.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models
from rnn_research.core.engine import run_layer
from rnn_research.core.norms import MiniLayerNorm, VerticalNorm, normalize_features
from rnn_research.core.spec import resolve
from rnn_research.core.step import cell_step

B, T, F, H = 3, 5, 2, 4
LENGTHS = (5, 2, 0)  # one full, one short and one empty sequence
EPS = 1e-5
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True)
def _eager():
  with jax.disable_jit():
    yield


def build(in_features: int = F, out_features: int | None = None, **cfg):
  cfg = dict(dict(cell="gru", hidden_size=H, num_layers=1), **cfg)
  return models.build(cfg, in_features=in_features, out_features=out_features, rngs=nnx.Rngs(0))


def data(lengths=LENGTHS):
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
  garbage = jnp.where(jnp.asarray(mask)[..., None], xs, 40.0 * rng.normal(size=(B, T, F)))
  return xs, jnp.asarray(mask), garbage.astype(jnp.float32)


def randomize(param, rng, scale=0.5, offset=0.0):
  param[...] = jnp.asarray(offset + scale * rng.normal(size=param.shape), jnp.float32)


def stats(model):
  """A snapshot of the running statistics (nnx.state holds live references)."""
  return [np.array(a) for a in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]


def raw_layer_output(model, l, xs, mask):
  """Layer l's un-normalised output sequence [B, T, H] (its input computed by the caller)."""
  cell = model.layers[l]
  hs, _, _ = run_layer(cell, cell.weights(), jnp.swapaxes(xs, 0, 1),
                    None if mask is None else mask.T, cell.initial_carry(xs.shape[0]), model.how)
  return np.asarray(jnp.swapaxes(hs, 0, 1))


def feature_moments(h):
  return h.mean(axis=-1), h.var(axis=-1)


def stream(model, xs, mask=None):
  state, ys = model.initial_state(xs.shape[0]), []
  for t in range(xs.shape[1]):
    state, y = model.step(state, xs[:, t], None if mask is None else mask[:, t])
    ys.append(y)
  return jnp.stack(ys, axis=1), state


# ---------------------------------------------------------------------------------- mini_layer


def test_mini_layer_zero_mean_unit_variance_over_features_at_every_step():
  xs, mask, _ = data()
  model = build(num_layers=2, norm="mini_layer")
  assert [type(n) for n in model.between] == [MiniLayerNorm, MiniLayerNorm]
  # Layer 0's output through its norm (gain 1, bias 0): every (b, t) vector standardised.
  h0 = raw_layer_output(model, 0, xs, None)
  mean, var = feature_moments(np.asarray(model.between[0](jnp.asarray(h0), None)))
  np.testing.assert_allclose(mean, 0.0, atol=1e-6)
  raw_var = h0.var(axis=-1)
  np.testing.assert_allclose(var, raw_var / (raw_var + EPS), rtol=1e-4)  # 1 up to eps
  assert np.abs(feature_moments(h0)[0]).max() > 1e-2  # the raw output is not standardised
  # Through the model (no readout: the output is the top layer's normalised h).
  hs, final = model(xs, mask, return_state=True)
  valid = np.asarray(mask)
  mean, var = feature_moments(np.asarray(hs)[valid])
  np.testing.assert_allclose(mean, 0.0, atol=1e-6)
  np.testing.assert_allclose(var, 1.0, atol=1e-2)
  assert np.all(np.asarray(hs)[~valid] == 0.0)
  # The carry is untouched: the final h is the raw one whose normalisation is the last output.
  top_h = final[-1][0]
  assert float(jnp.abs(top_h.mean(axis=-1)).max()) > 1e-2
  np.testing.assert_allclose(normalize_features(top_h[0], 1.0, 0.0, EPS), hs[0, -1], **TOL)
  # Layer 1 read layer 0's normalised output.
  h1 = model.between[1](jnp.asarray(raw_layer_output(model, 1, model.between[0](
      jnp.asarray(raw_layer_output(model, 0, xs, None)), None), None)), None)
  np.testing.assert_allclose(h1, model(xs), **TOL)


def test_mini_layer_at_hidden_size_one_is_the_bias():
  """The lecture's caveat (Fig 13.9): with H = 1 every normalised vector is 0, so LN(h) = b."""
  xs, mask, _ = data()
  model = build(hidden_size=1, norm="mini_layer")
  model.between[0].bias[...] = jnp.asarray([0.7])
  model.between[0].gain[...] = jnp.asarray([-1.3])
  hs = np.asarray(model(xs, mask))
  valid = np.asarray(mask)
  np.testing.assert_allclose(hs[valid], 0.7, rtol=1e-6)
  assert np.all(hs[~valid] == 0.0)
  assert np.ptp(raw_layer_output(model, 0, xs, None)) > 1e-2  # the input did vary


# ------------------------------------------------------------------------------- mini_vertical


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_mini_vertical_normalises_the_carry_not_the_output(cell):
  model = build(cell=cell, norm="mini_vertical")
  layer = model.layers[0]
  assert model.between[0] is None and layer.carry_norm_eps == EPS
  rng = np.random.default_rng(1)
  p = layer.weights()
  carry = jax.tree.map(lambda c: jnp.asarray(rng.normal(size=c.shape), jnp.float32),
                       layer.initial_carry(B))
  x = jnp.asarray(rng.normal(size=(B, F)), jnp.float32)
  zh = carry[0] @ p["w_h"]
  cols = layer.zh_columns()
  args = (p["pw"], x @ p["w_x"] + p["b"] + zh, None if cols is None else zh[..., cols], carry)
  new, y = layer.step_pointwise(*args)
  raw_new, raw_y = layer.pointwise(*args)
  np.testing.assert_array_equal(y, raw_y)  # the output to the next layer: un-normalised
  assert float(jnp.abs(y.mean(axis=-1)).max()) > 1e-2
  mean, var = feature_moments(np.asarray(new[0]))  # the h that enters the next step's W_h
  np.testing.assert_allclose(mean, 0.0, atol=1e-6)
  raw_var = np.asarray(raw_y).var(axis=-1)
  np.testing.assert_allclose(var, raw_var / (raw_var + EPS), rtol=1e-4)
  np.testing.assert_allclose(new[0], normalize_features(raw_y, 1.0, 0.0, EPS), **TOL)
  for got, want in zip(new[1:], raw_new[1:]):  # the lstm's c is left alone
    np.testing.assert_array_equal(got, want)


def test_mini_vertical_recurrence():
  """y_t = tanh(x_t W_x + b + h_{t-1} W_h) goes up, h_t = LN(y_t) goes right; h_0 = 0."""
  xs, _, _ = data()
  model = build(cell="rnn", norm="mini_vertical")
  layer = model.layers[0]
  layer.carry_gain[...] = jnp.asarray([0.5, 1.5, -1.0, 2.0])
  layer.carry_bias[...] = jnp.asarray([0.1, -0.2, 0.3, 0.0])
  ys, final = model(xs, return_state=True)
  p = layer.weights()
  h = jnp.zeros((B, H))
  for t in range(T):
    y = jnp.tanh(xs[:, t] @ p["w_x"] + p["b"] + h @ p["w_h"])
    np.testing.assert_allclose(ys[:, t], y, **TOL)
    h = normalize_features(y, layer.carry_gain[...], layer.carry_bias[...], EPS)
  np.testing.assert_allclose(final[0][0], h, **TOL)


# ---------------------------------------------------------------------------------- layer


def layer_norm_reference(h, mask, gain, bias):
  """Per-sequence statistics over (time, features) of the valid positions, numpy."""
  m = np.asarray(mask, np.float64)[..., None]
  count = np.maximum(m.sum(axis=(1, 2)) * h.shape[-1], 1.0)
  mu = (h * m).sum(axis=(1, 2)) / count
  s2 = (np.square(h - mu[:, None, None]) * m).sum(axis=(1, 2)) / count
  out = gain * (h - mu[:, None, None]) / np.sqrt(s2[:, None, None] + EPS) + bias
  return np.where(m > 0, out, 0.0), mu, s2


def test_layer_norm_per_sequence_statistics_and_running_averages():
  xs, mask, garbage = data()
  model = build(norm="layer", norm_momentum=0.8)
  norm = model.between[0]
  rng = np.random.default_rng(2)
  randomize(norm.gain, rng, offset=1.0)
  randomize(norm.bias, rng)
  h = raw_layer_output(model, 0, xs, mask)
  want, mu, s2 = layer_norm_reference(h, mask, np.asarray(norm.gain[...]),
                                      np.asarray(norm.bias[...]))
  hs = model(garbage, mask)  # train mode; the padding's values must not matter
  np.testing.assert_allclose(hs, want, **TOL)
  # Statistics of valid positions only: padding values do not enter them.
  assert abs(mu[0] - h[0].mean()) < 1e-6 and abs(mu[1] - h[1, :2].mean()) < 1e-6
  # Running averages: m * old + (1 - m) * the mean over the batch's non-empty sequences.
  seen = np.asarray(LENGTHS) > 0
  np.testing.assert_allclose(norm.mean[...], 0.2 * mu[seen].mean(), **TOL)
  np.testing.assert_allclose(norm.var[...], 0.8 * 1.0 + 0.2 * s2[seen].mean(), **TOL)
  old_mean, old_var = float(norm.mean[...]), float(norm.var[...])
  model(xs, mask)
  np.testing.assert_allclose(norm.mean[...], 0.8 * old_mean + 0.2 * mu[seen].mean(), **TOL)
  np.testing.assert_allclose(norm.var[...], 0.8 * old_var + 0.2 * s2[seen].mean(), **TOL)


def layer_models():
  """Two `layer`-norm models, eval_norm_stats running / sequence, same weights, both trained
  for one call (so the running statistics are far from their initial 0 / 1)."""
  xs, mask, _ = data()
  running = build(norm="layer", norm_momentum=0.3, eval_norm_stats="running")
  sequence = build(norm="layer", norm_momentum=0.3, eval_norm_stats="sequence")
  running(xs, mask)
  nnx.update(sequence, nnx.state(running))
  for a, b in zip(jax.tree.leaves(nnx.state(running)), jax.tree.leaves(nnx.state(sequence))):
    np.testing.assert_array_equal(a, b)
  return running, sequence


def test_layer_norm_eval_running_equals_streaming():
  xs, mask, _ = data()
  running, _ = layer_models()
  norm = running.between[0]
  before = stats(running)
  running.eval()
  full = running(xs, mask)
  streamed, _ = stream(running, xs, mask)
  np.testing.assert_allclose(streamed, full, **TOL)
  # ... which is the running-statistics formula, not the sequence's own statistics.
  h = raw_layer_output(running, 0, xs, mask)
  want = np.where(np.asarray(mask)[..., None],
                  (h - float(norm.mean[...])) / np.sqrt(float(norm.var[...]) + EPS), 0.0)
  np.testing.assert_allclose(full, want, **TOL)
  own, _, _ = layer_norm_reference(h, mask, 1.0, 0.0)
  assert np.abs(np.asarray(full) - own).max() > 1e-2
  for a, b in zip(stats(running), before):  # eval never updates them
    np.testing.assert_array_equal(a, b)


def test_layer_norm_eval_sequence_uses_the_sequences_own_statistics():
  xs, mask, _ = data()
  running, sequence = layer_models()
  before = stats(sequence)
  train_mode = nnx.clone(sequence)(xs, mask)  # train-mode normalisation of the same batch
  sequence.eval()
  running.eval()
  own = sequence(xs, mask)
  np.testing.assert_allclose(own, train_mode, **TOL)
  assert float(jnp.abs(own - running(xs, mask)).max()) > 1e-2
  for a, b in zip(stats(sequence), before):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_norm_step_always_uses_running_statistics(mode):
  xs, mask, _ = data()
  running, sequence = layer_models()
  before = stats(sequence)
  getattr(sequence, mode)()
  streamed, _ = stream(sequence, xs, mask)
  running.eval()
  np.testing.assert_allclose(streamed, running(xs, mask), **TOL)
  for a, b in zip(stats(sequence), before):  # streaming never updates them, even in training
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------- batch


def test_batch_norm_statistics_over_valid_positions_only():
  xs, mask, garbage = data()
  model = build(norm="batch", norm_momentum=0.7)
  norm = model.between[0]
  rng = np.random.default_rng(3)
  randomize(norm.gain, rng, offset=1.0)
  randomize(norm.bias, rng)
  gain, bias = np.asarray(norm.gain[...]), np.asarray(norm.bias[...])
  h = raw_layer_output(model, 0, xs, mask)
  valid = np.asarray(mask)
  mu, s2 = h[valid].mean(axis=0), h[valid].var(axis=0)  # per feature over valid (b, t)
  want = np.where(valid[..., None], gain * (h - mu) / np.sqrt(s2 + EPS) + bias, 0.0)
  twin = nnx.clone(model)
  np.testing.assert_allclose(model(xs, mask), want, **TOL)
  np.testing.assert_allclose(norm.mean[...], 0.3 * mu, **TOL)
  np.testing.assert_allclose(norm.var[...], 0.7 + 0.3 * s2, **TOL)
  # Padded values change neither the outputs nor the running statistics.
  np.testing.assert_allclose(twin(garbage, mask), want, **TOL)
  for a, b in zip(stats(twin), stats(model)):
    np.testing.assert_allclose(a, b, **TOL)
  # Eval and streaming use the running statistics.
  model.eval()
  mean, var = np.asarray(norm.mean[...]), np.asarray(norm.var[...])
  want = np.where(valid[..., None], gain * (h - mean) / np.sqrt(var + EPS) + bias, 0.0)
  np.testing.assert_allclose(model(garbage, mask), want, **TOL)
  np.testing.assert_allclose(stream(model, garbage, mask)[0], want, **TOL)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_all_padding_batch_leaves_running_statistics_alone(norm):
  xs, mask, _ = data()
  model = build(norm=norm, norm_momentum=0.5)
  model(xs, mask)
  before = stats(model)
  model(xs, jnp.zeros_like(mask))  # padding only: nothing to learn the statistics from
  for a, b in zip(stats(model), before):
    np.testing.assert_allclose(a, b, **TOL)


# ---------------------------------------------------------------------------------- vertical


def test_vertical_norm_normalises_the_carries_across_layers():
  xs, mask, _ = data()
  model = build(num_layers=3, norm="vertical")
  assert model.time_major and isinstance(model.vertical_norm, VerticalNorm)
  _, final = model(xs, return_state=True)
  carries = np.stack([np.asarray(c[0]) for c in final])  # [L, B, H]
  np.testing.assert_allclose(carries.mean(axis=0), 0.0, atol=1e-6)  # per (b, feature)
  np.testing.assert_allclose(carries.var(axis=0), 1.0, atol=1e-2)
  # A sequence past its end keeps its (normalised) carries frozen.
  _, final_masked = model(xs, mask, return_state=True)
  for c in final_masked:
    np.testing.assert_array_equal(np.asarray(c[0])[2], 0.0)  # the empty sequence: h_0 = 0


def test_vertical_norm_outputs_going_up_are_unnormalised():
  """One step by hand: each layer reads the raw output of the one below; only the carries
  that go to the next step are normalised (across layers); the step's output is raw."""
  xs, _, _ = data()
  model = build(num_layers=3, norm="vertical")
  rng = np.random.default_rng(4)
  randomize(model.vertical_norm.gain, rng, offset=1.0)
  randomize(model.vertical_norm.bias, rng)
  state = model.initial_state(B)
  for t in range(2):
    u, carries = xs[:, t], []
    for cell, carry in zip(model.layers, state):
      carry, u, _ = cell_step(cell, cell.weights(), carry, u, None)
      carries.append(carry)
    state, y = model.step(state, xs[:, t])
    np.testing.assert_allclose(y, u, **TOL)  # the raw top output
    raw = jnp.stack([c[0] for c in carries])
    normed = model.vertical_norm(raw)
    mu, s2 = raw.mean(axis=0), raw.var(axis=0)
    want = (model.vertical_norm.gain[...][:, None] * (raw - mu) / jnp.sqrt(s2 + EPS)
            + model.vertical_norm.bias[...][:, None])
    np.testing.assert_allclose(normed, want, **TOL)
    for l, c in enumerate(state):
      np.testing.assert_allclose(c[0], normed[l], **TOL)
    assert float(jnp.abs(state[-1][0] - y).max()) > 1e-2


def test_vertical_norm_needs_two_layers_and_all_of_them():
  with pytest.raises(ValueError, match="num_layers >= 2"):
    build(norm="vertical")
  with pytest.raises(ValueError, match="norm_layers='all'"):
    build(num_layers=2, norm="vertical", norm_layers="0")
  build(num_layers=2, norm="vertical", norm_layers="0,1")  # every layer, spelled out


# ---------------------------------------------------------------------------- time-major rules


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_time_major_training_with_sequence_statistics_raises(norm):
  xs, mask, _ = data()
  model = build(num_layers=2, norm=norm, execution="time_major")
  with pytest.raises(ValueError, match=r"model\.eval\(\)"):
    model(xs, mask)
  probes = jnp.zeros((2, B, T, H))
  layer_major = build(num_layers=2, norm=norm)
  with pytest.raises(ValueError, match=r"model\.eval\(\)"):
    layer_major(xs, mask, probes=probes)
  model.eval()
  layer_major.eval()
  np.testing.assert_allclose(model(xs, mask), layer_major(xs, mask), **TOL)
  layer_major(xs, mask, probes=probes)


def test_time_major_eval_with_sequence_statistics_matches_or_raises():
  xs, mask, _ = data()
  layer_major = build(num_layers=2, norm="layer", eval_norm_stats="sequence", norm_momentum=0.3)
  time_major = build(num_layers=2, norm="layer", eval_norm_stats="sequence", norm_momentum=0.3,
                     execution="time_major")
  layer_major(xs, mask)  # training moves the running statistics
  nnx.update(time_major, nnx.state(layer_major))
  layer_major.eval()
  time_major.eval()
  want = layer_major(xs, mask)
  try:
    got = time_major(xs, mask)
  except ValueError:
    return
  np.testing.assert_allclose(got, want, **TOL)


# ------------------------------------------------------------------------------- norm_layers


def test_norm_layers_selects_which_layers_are_normalised():
  xs, _, _ = data()
  plain = build(num_layers=2, norm="none")
  top_only = build(num_layers=2, norm="mini_layer", norm_layers="1")
  bottom_only = build(num_layers=2, norm="mini_layer", norm_layers="0")
  for other in (top_only, bottom_only):  # the same cell weights (norms draw no randomness)
    for a, b in zip(jax.tree.leaves(nnx.state(plain.layers, nnx.Param)),
                    jax.tree.leaves(nnx.state(other.layers, nnx.Param))):
      np.testing.assert_array_equal(a, b)
  assert top_only.between[0] is None and isinstance(top_only.between[1], MiniLayerNorm)
  # Layer 0's output is unchanged, so layer 1 sees what it sees without norms.
  np.testing.assert_allclose(top_only(xs), normalize_features(plain(xs), 1.0, 0.0, EPS), **TOL)
  assert float(jnp.abs(bottom_only(xs) - plain(xs)).max()) > 1e-3
  # Every other placement honours it too.
  for norm in ("layer", "batch"):
    m = build(num_layers=3, norm=norm, norm_layers="0,2")
    assert [n is None for n in m.between] == [False, True, False]
  m = build(num_layers=3, norm="mini_vertical", norm_layers="1")
  assert [c.carry_norm_eps for c in m.layers] == [None, EPS, None]
  assert all(n is None for n in m.between)
  assert resolve(dict(num_layers=3, norm="batch")).normed_layers == (0, 1, 2)
  assert resolve(dict(num_layers=3, norm="batch", norm_layers="2,0,2")).normed_layers == (0, 2)
  assert resolve(dict(num_layers=3, norm_layers="2")).normed_layers == ()  # norm='none'


@pytest.mark.parametrize("spec", ["5", "x", "", "-1", "0,5", "1;0"])
def test_bad_norm_layers_raise(spec):
  with pytest.raises(ValueError, match=r"norm_layers must be 'all' or comma-separated layer "
                                       r"indices in \[0, 1\]"):
    build(num_layers=2, norm="mini_layer", norm_layers=spec)


def test_unknown_norm_and_eval_norm_stats_raise_naming_the_choices():
  with pytest.raises(ValueError, match="unknown norm 'group'; valid choices: none, layer, "
                                       "mini_layer, mini_vertical, vertical, batch"):
    build(norm="group")
  with pytest.raises(ValueError, match="unknown eval_norm_stats 'future'; valid choices: "
                                       "running, sequence"):
    build(norm="layer", eval_norm_stats="future")
  with pytest.raises(ValueError, match="valid choices: running, sequence"):
    resolve(dict(norm="layer", eval_norm_stats="future"))  # the spec checks, without a model
