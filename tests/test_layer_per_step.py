"""norm='layer_per_step' (Ba et al. 2016): LN of x W_x and h W_h per row and step; LSTM: LN(c_t)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models

import param_noise

B, T, F, H = 3, 5, 4, 3
EPS = 1e-5
TOL = dict(atol=2e-5, rtol=2e-5)
ENGINES = ("scan_hoisted", "vjp", "vjp_hoisted")


def build(cell: str, **overrides):
  cfg = {"cell": cell, "hidden_size": H, "norm": "layer_per_step", "norm_eps": EPS, **overrides}
  return param_noise.perturb(models.build(cfg, F, None, nnx.Rngs(0)), 0.3)


def inputs(seed: int = 0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(B, T, F)), jnp.float32)


def ln(a, gain, bias=0.0):
  mean = a.mean(-1, keepdims=True)
  var = ((a - mean) ** 2).mean(-1, keepdims=True)
  return gain * (a - mean) / jnp.sqrt(var + EPS) + bias


def reference(cell: str, layer, xs):
  """Ba et al.'s equations written out, one step at a time: xs [B, T, F] -> hs [B, T, H]."""
  w_x, w_h, b = layer.w_x[...], layer.w_h[...], layer.b[...]
  norm = layer.step_ln
  h = c = jnp.zeros((B, H))
  out = []
  for t in range(T):
    zx, zh = ln(xs[:, t] @ w_x, norm.gain_x[...]), ln(h @ w_h, norm.gain_h[...])
    z = zx + zh + b
    if cell == "rnn":
      h = jnp.tanh(z)
    elif cell == "lstm":
      i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(ln(c, norm.gain_c[...], norm.bias_c[...]))
    else:  # gru: the reset gate scales the normalised recurrent part of the candidate
      r, u = jax.nn.sigmoid(z[:, :H]), jax.nn.sigmoid(z[:, H:2 * H])
      n = jnp.tanh(zx[:, 2 * H:] + b[2 * H:] + r * (zh[:, 2 * H:] + layer.b_hn[...]))
      h = (1 - u) * n + u * h
    out.append(h)
  return jnp.stack(out, axis=1)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_matches_the_papers_equations(cell):
  model = build(cell)
  xs = inputs()
  np.testing.assert_allclose(model(xs), reference(cell, model.layers[0], xs), **TOL)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_engine_gives_the_gradients_of_plain_autodiff(cell):
  """Two layers, a mask with holes, resets: outputs and gradients of every parameter and of the
  inputs agree with engine='scan' (plain autodiff of the loop), with and without remat."""
  xs = inputs(1)
  mask = jnp.asarray([[True] * T, [True, False] + [True] * (T - 2), [True, True] + [False] * 3])
  resets = jnp.zeros((B, T), bool).at[0, 2].set(True)

  def grads(engine, remat):
    model = build(cell, num_layers=2, engine=engine, remat=remat, learned_initial_state=True)
    loss = lambda m, x: jnp.sum(jnp.sin(m(x, mask, resets=resets)))
    return nnx.grad(loss, argnums=(0, 1))(model, xs)

  want = grads("scan", False)
  assert float(jnp.abs(want[1]).max()) > 0
  for engine in ENGINES:
    for remat in (False, True):
      for a, b in zip(jax.tree.leaves(grads(engine, remat)), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4, err_msg=f"{engine} {remat}")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_invariant_to_rescaling_the_weight_matrices(cell):
  """LN's defining property (Ba et al., section 5): scaling W_x or W_h by a constant leaves the
  outputs unchanged (up to eps, here negligible); without the norm it changes them."""
  xs = inputs(2)
  for norm, invariant in (("layer_per_step", True), ("none", False)):
    model = build(cell, norm=norm, norm_eps=1e-12)
    before = model(xs)
    layer = model.layers[0]
    layer.w_x[...] = 3.7 * layer.w_x[...]
    layer.w_h[...] = 0.4 * layer.w_h[...]
    close = np.allclose(model(xs), before, atol=1e-4, rtol=1e-4)
    assert close is invariant, norm


def test_rows_do_not_share_statistics_in_training():
  """Unlike batch_per_step, a row's outputs do not depend on the other rows of the batch, in
  training mode too, and training and eval compute the same function."""
  model = build("lstm", num_layers=2)
  xs = inputs(3)
  other = xs.at[1:].set(10.0 * inputs(4)[1:])
  np.testing.assert_allclose(model(other)[0], model(xs)[0], **TOL)
  train = model(xs)
  model.eval()
  np.testing.assert_allclose(model(xs), train, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_streaming_equals_the_full_sequence_in_training_mode(cell):
  model = build(cell, num_layers=2, horizontal_skip="learned", skip_span=2)
  xs = inputs(5)
  full = model(xs)
  state, steps = model.initial_state(B), []
  for t in range(T):
    state, y = model.step(state, xs[:, t])
    steps.append(y)
  np.testing.assert_allclose(jnp.stack(steps, axis=1), full, **TOL)


def test_norm_layers_selects_the_normalised_layers():
  model = build("gru", num_layers=2, norm_layers="1")
  assert model.layers[0].step_ln is None and model.layers[1].step_ln is not None
  assert "ln" in model.layers[1].weights()["pw"] and "ln" not in model.layers[0].weights()["pw"]


def test_the_bias_is_added_after_the_norms():
  """The engine's b is 0 and the cell's b (the LSTM's forget bias included) enters after LN."""
  layer = build("lstm", forget_bias=1.0).layers[0]
  weights = layer.weights()
  assert not np.any(weights["b"])
  np.testing.assert_array_equal(weights["pw"]["ln"]["b"], layer.b[...])


@pytest.mark.parametrize("cell", ["min_gru", "min_lstm"])
def test_refused_for_cells_without_a_recurrent_matrix(cell):
  with pytest.raises(ValueError, match="norm='layer_per_step' normalises h_{t-1} W_h"):
    models.build({"cell": cell, "norm": "layer_per_step"}, F, None, nnx.Rngs(0))
