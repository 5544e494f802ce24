"""Vertical and horizontal skips (lecture 2.2, Figs 13.12 and 13.13) do what they say.

Horizontal, span k (the carry holds h_{t-k}, ..., h_{t-1}, oldest first):
  `residual`: h_t = cell(h_{t-1}, x_t) + h_{t-k}  (an lstm's c untouched)
  `learned`:  z_t += h_{t-k} W_s
Vertical, with h^(-1) = x W_p (W_p the `project` Linear when F != H, else identity):
  `residual`: layer l >= 1 reads h^(l-1) + h^(l-2), the readout h^(L-1) + h^(L-2);
  `dense`:    layer l >= 1 reads [x, h^(l-1)], the readout [h^(0), ..., h^(L-1)].
Runs eagerly (`jax.disable_jit()`): few calls per test at tiny shapes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.training import diagnostics
from rnn_research.core import models
from rnn_research.core.engine import run_layer

B, T, F, H, O = 2, 6, 2, 3, 2
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True)
def _eager():
  with jax.disable_jit():
    yield


def build(in_features: int = F, out_features: int | None = None, seed: int = 0, **cfg):
  cfg = dict(dict(hidden_size=H, num_layers=1), **cfg)
  return models.build(cfg, in_features=in_features, out_features=out_features,
                      rngs=nnx.Rngs(seed))


def inputs(in_features: int = F, steps: int = T, lengths=(T, 3)):
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(size=(B, steps, in_features)), jnp.float32)
  mask = jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None]
  return xs, mask


def pre_activations(cell, p, carry, x):
  """(z, zh[..., cols]) of one step, as `rnn_research.core.step.recur` forms them."""
  zh = carry[0] @ p["w_h"]
  cols = cell.zh_columns()
  return x @ p["w_x"] + p["b"] + zh, None if cols is None else zh[..., cols]


# --------------------------------------------------------------------------------- horizontal


@pytest.mark.parametrize("cell,span", [("rnn", 2), ("lstm", 2), ("gru", 3), ("lstm", 1)])
def test_residual_horizontal_skip(cell, span):
  xs, _ = inputs()
  model = build(cell=cell, horizontal_skip="residual", skip_span=span)
  layer = model.layers[0]
  p = layer.weights()
  state = model.initial_state(B)
  assert state[0].history.shape == (B, span * H)  # the history h_{t-k..t-1}, zeros at the start
  # step_pointwise step by step: the history buffer and y_t - h_{t-k} = the raw cell's output.
  carry, ys = state[0], []
  for t in range(T):
    z, zh = pre_activations(layer, p, carry, xs[:, t])
    new, y = layer.step_pointwise(p["pw"], z, zh, carry)
    raw_new, raw_y = layer.pointwise(p["pw"], z, zh, carry._replace(history=None))
    h_minus_k = ys[t - span] if t >= span else jnp.zeros((B, H))
    np.testing.assert_allclose(y - h_minus_k, raw_y, **TOL)
    ys.append(y)
    last = [jnp.zeros((B, H))] * max(span - len(ys), 0) + ys[-span:]
    np.testing.assert_array_equal(new.history, jnp.concatenate(last, axis=-1))
    np.testing.assert_array_equal(new[0], y)  # the carried h includes the skip
    if raw_new.c is not None:  # the lstm's c: the cell's own, no skip
      np.testing.assert_array_equal(new.c, raw_new.c)
    carry = new
  # The model runs exactly this recurrence.
  hs, final = model(xs, return_state=True)
  np.testing.assert_allclose(hs, jnp.stack(ys, axis=1), **TOL)
  for got, want in zip(jax.tree.leaves(final[0]), jax.tree.leaves(carry)):
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("cell", ["rnn", pytest.param("lstm", marks=pytest.mark.slow),
                                  pytest.param("gru", marks=pytest.mark.slow)])
def test_learned_horizontal_skip(cell):
  xs, mask = inputs()
  plain = build(cell=cell, num_layers=2, out_features=O)
  skip = build(cell=cell, num_layers=2, out_features=O, horizontal_skip="learned", skip_span=2)
  assert all(layer.w_skip.shape == layer.w_h.shape for layer in skip.layers)
  nnx.update(skip, nnx.state(plain, nnx.Param))  # every weight but W_s from the plain model
  for layer in skip.layers:
    layer.w_skip[...] = jnp.zeros_like(layer.w_skip[...])
  np.testing.assert_array_equal(skip(xs, mask), plain(xs, mask))  # W_s = 0: no skip at all

  def loss(m):
    return jnp.sum(jnp.square(m(xs, mask)))

  grads = nnx.grad(loss)(skip)
  for l in range(2):  # the gradient reaches W_s even where W_s = 0
    assert float(jnp.abs(grads["layers"][l]["w_skip"][...]).max()) > 1e-6, l
  rng = np.random.default_rng(1)
  for layer in skip.layers:
    layer.w_skip[...] = jnp.asarray(rng.normal(size=layer.w_skip.shape), jnp.float32)
  changed = np.abs(np.asarray(skip(xs, mask) - plain(xs, mask)))
  assert changed[:, :2].max() == 0.0  # h_{t-2} = h_{-1}, h_0 = 0 for t < 2
  assert changed[0, 2:].min() > 1e-6


@pytest.mark.slow  # two models' gradient flow, step by step
def test_residual_horizontal_skip_keeps_gradients_alive():
  """||dL/dh_1|| / ||dL/dh_T|| for a tanh rnn with the loss on the last step: it dies
  without a horizontal skip and does not with a residual one (span 2)."""
  xs, mask = inputs(steps=16, lengths=(16, 16))
  batch = {"x": xs, "mask": mask}

  def loss(ys, batch):
    return jnp.sum(jnp.square(ys[:, -1]))

  ratios = {}
  for skip in ("none", "residual"):
    model = build(cell="rnn", activation="tanh", out_features=1, horizontal_skip=skip,
                  skip_span=2)
    flow = np.asarray(diagnostics.gradient_flow(*nnx.split(model, nnx.Param, ...), batch, loss))
    assert flow.shape == (1, 16) and np.all(np.isfinite(flow))
    ratios[skip] = flow[0, 0] / flow[0, -1]
  assert ratios["none"] < 1e-2  # measured 2.5e-4 (T = 16)
  assert ratios["residual"] > 1.0  # measured 3.9: no decay (it grows: h_t sums the past)
  assert ratios["residual"] > 1e3 * ratios["none"]


@pytest.mark.parametrize("skip", ["residual", "learned"])
def test_gradient_flow_with_horizontal_skip_is_dl_dh(skip):
  """Reference: the same rnn by hand, with the perturbation added to h_t itself (so it reaches
  the next step, the next layer and the skip history alike)."""
  xs, mask = inputs()
  model = build(cell="rnn", horizontal_skip=skip, skip_span=2)
  batch = {"x": xs, "mask": jnp.ones_like(mask)}

  def loss(ys, batch):
    return jnp.sum(jnp.square(ys[:, -1]))

  flow = diagnostics.gradient_flow(*nnx.split(model, nnx.Param, ...), batch, loss)
  p = model.layers[0].weights()

  def by_hand(probes):  # probes [B, T, H]
    hist, h, ys = [jnp.zeros((B, H))] * 2, jnp.zeros((B, H)), []
    for t in range(T):
      z = xs[:, t] @ p["w_x"] + p["b"] + h @ p["w_h"]
      if skip == "learned":
        z = z + hist[0] @ p["pw"]["w_skip"]
      h = jnp.tanh(z) + (hist[0] if skip == "residual" else 0.0) + probes[:, t]
      hist = hist[1:] + [h]
      ys.append(h)
    return loss(jnp.stack(ys, axis=1), batch)

  want = jnp.linalg.norm(jax.grad(by_hand)(jnp.zeros((B, T, H))), axis=-1).mean(axis=0)
  np.testing.assert_allclose(flow[0], want, rtol=1e-4, atol=1e-6)


def test_gradient_flow_reference_without_skip():
  """The by-hand reference above agrees with gradient_flow where there is no skip."""
  xs, mask = inputs()
  model = build(cell="rnn")
  batch = {"x": xs, "mask": jnp.ones_like(mask)}

  def loss(ys, batch):
    return jnp.sum(jnp.square(ys[:, -1]))

  flow = diagnostics.gradient_flow(*nnx.split(model, nnx.Param, ...), batch, loss)
  p = model.layers[0].weights()

  def by_hand(probes):
    h, ys = jnp.zeros((B, H)), []
    for t in range(T):
      h = jnp.tanh(xs[:, t] @ p["w_x"] + p["b"] + h @ p["w_h"]) + probes[:, t]
      ys.append(h)
    return loss(jnp.stack(ys, axis=1), batch)

  want = jnp.linalg.norm(jax.grad(by_hand)(jnp.zeros((B, T, H))), axis=-1).mean(axis=0)
  np.testing.assert_allclose(flow[0], want, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------- vertical


def per_layer(model, l, u, mask):
  """Layer l alone over u [T, B, .] (time-major), by `engine.run_layer`."""
  cell = model.layers[l]
  hs, _, _ = run_layer(cell, cell.weights(), u, mask, cell.initial_carry(u.shape[1]), model.how)
  return hs


def read(model, top, mask):
  ys = jnp.swapaxes(model.readout(top), 0, 1)
  return jnp.where(mask[..., None], ys, 0.0)


@pytest.mark.parametrize("in_features,num_layers", [(2, 2), (3, 2), (2, 3)])
def test_residual_vertical_skip(in_features, num_layers):
  xs, mask = inputs(in_features)
  model = build(in_features, out_features=O, cell="gru", num_layers=num_layers,
                vertical_skip="residual")
  if in_features == H:
    assert model.project is None  # h^(-1) = x
    below = jnp.swapaxes(xs, 0, 1)
  else:
    assert model.project.kernel.shape == (in_features, H) and model.project.bias is None
    below = jnp.swapaxes(xs, 0, 1) @ model.project.kernel[...]  # h^(-1) = x W_p
  assert [c.in_features for c in model.layers] == [in_features] + [H] * (num_layers - 1)
  u, m = jnp.swapaxes(xs, 0, 1), mask.T
  h = per_layer(model, 0, u, m)
  for l in range(1, num_layers):
    h, below = per_layer(model, l, h + below, m), h  # layer l reads h^(l-1) + h^(l-2)
  np.testing.assert_allclose(model(xs, mask), read(model, h + below, mask), **TOL)


@pytest.mark.parametrize("num_layers", [2, 3])
def test_dense_vertical_skip(num_layers):
  xs, mask = inputs()
  model = build(out_features=O, cell="lstm", num_layers=num_layers, vertical_skip="dense")
  assert [c.w_x.shape[0] for c in model.layers] == [F] + [F + H] * (num_layers - 1)
  assert model.readout.out.kernel.shape == (num_layers * H, O)
  assert model.project is None
  u, m = jnp.swapaxes(xs, 0, 1), mask.T
  outs = [per_layer(model, 0, u, m)]
  for l in range(1, num_layers):
    outs.append(per_layer(model, l, jnp.concatenate([u, outs[-1]], axis=-1), m))
  np.testing.assert_allclose(model(xs, mask),
                             read(model, jnp.concatenate(outs, axis=-1), mask), **TOL)
  # Without a readout the model returns the concatenation [h^(0), ..., h^(L-1)].
  bare = build(cell="lstm", num_layers=num_layers, vertical_skip="dense")
  assert bare(xs).shape == (B, T, num_layers * H)


def test_bad_skip_choices_raise():
  with pytest.raises(ValueError, match="unknown vertical_skip 'highway'; valid choices: none, "
                                       "residual, dense"):
    build(vertical_skip="highway")
  with pytest.raises(ValueError, match="unknown horizontal_skip 'gated'; valid choices: none, "
                                       "residual, learned"):
    build(horizontal_skip="gated")
  for span in (0, -2):
    with pytest.raises(ValueError, match="skip_span must be a positive integer"):
      build(horizontal_skip="residual", skip_span=span)
