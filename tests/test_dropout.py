"""Dropout of the stacked model (config.model.dropout, recurrent_dropout,
recurrent_dropout_inputs): its semantics against a hand-written reference, one recurrent mask
per sequence, eval/streaming never drop, keys, and the agreement of every execution path
(layer_major / time_major, scan / custom VJP) under dropout.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import dropout, models

import param_noise

B, T, F, H, O = 3, 6, 3, 4, 2
LENGTHS = (6, 3, 1)
TOL = dict(atol=1e-5, rtol=1e-5)
CELLS = ("lstm", "gru", "rnn")
KEY = jax.random.PRNGKey(7)
RATES = dict(dropout=0.3, recurrent_dropout=0.4, recurrent_dropout_inputs=True)


def perturb(model, seed: int = 5):
  return param_noise.perturb(model, 0.1, seed)


def build(cell: str, *, out=O, layers: int = 2, **cfg):
  c = dict(cell=cell, hidden_size=H, num_layers=layers, engine="scan")
  c.update(cfg)
  return perturb(models.build(c, in_features=F, out_features=out, rngs=nnx.Rngs(0)))


def data(seed: int = 42):
  rng = np.random.default_rng(seed)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask = jnp.arange(T)[None, :] < jnp.asarray(LENGTHS)[:, None]
  return xs, mask


def split(model):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, params.to_pure_dict(), rest


def grads(model, xs, mask, key, **kw):
  """d/d(params, xs) of a weighted sum of the outputs."""
  graphdef, params, rest = split(model)
  w = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, O)), jnp.float32)

  def loss(p, x):
    return jnp.sum(nnx.merge(graphdef, p, rest)(x, mask, key=key, **kw) * w)

  return jax.grad(loss, argnums=(0, 1))(params, xs)


def assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


# ------------------------------------------------------------------------ a hand-written reference


def ref_layer(cell, us, rec):
  """One layer over us [B, T, F], with the recurrent mask `rec` ([B, H], or [T, B, H]: one per
  step) on h_{t-1} where it enters W_h; the cell's own pointwise math."""
  p = cell.weights()
  cols = cell.zh_columns()
  carry = cell.initial_carry(us.shape[0])
  ys = []
  for t in range(us.shape[1]):
    d = None if rec is None else (rec[t] if rec.ndim == 3 else rec)
    h = carry[0] if d is None else carry[0] * d
    zh = h @ p["w_h"]
    z = us[:, t] @ p["w_x"] + p["b"] + zh
    carry, y = cell.pointwise(p["pw"], z, None if cols is None else zh[..., cols], carry)
    ys.append(y)
  return jnp.stack(ys, axis=1)


def draw_noise(model, key, steps: int, batch: int) -> list[dict]:
  """The model's dropout masks per layer, {inp, rec, out}, as its call draws them."""
  widths = [(cell.in_features, cell.hidden_size) for cell in model.layers]
  return [n._asdict() for n in dropout.draw(key, model.rates, widths, steps, batch, jnp.float32)]


def reference(model, xs, noise, rec_per_step=None):
  """The documented dropout of the stack, with masks `noise` (as `draw_noise` returns them);
  rec_per_step[l] [T, B, H], if given, replaces layer l's one-per-sequence recurrent mask."""
  u = xs
  for l, cell in enumerate(model.layers):
    nz = noise[l]
    if nz["inp"] is not None:
      u = u * nz["inp"][:, None, :]
    rec = nz["rec"] if rec_per_step is None else rec_per_step[l]
    h = ref_layer(cell, u, rec)
    if nz["out"] is not None:
      h = h * jnp.swapaxes(nz["out"], 0, 1)
    u = h
  return u if model.readout is None else model.readout(u)


def test_noise_masks_shapes_values_and_rates():
  model = build("gru", layers=2, dropout=0.25, recurrent_dropout=0.5,
                recurrent_dropout_inputs=True)
  steps, batch = 50, 400
  noise = draw_noise(model, KEY, steps, batch)
  assert len(noise) == 2
  assert noise[0]["inp"].shape == (batch, F) and noise[1]["inp"].shape == (batch, H)
  assert noise[0]["rec"].shape == noise[1]["rec"].shape == (batch, H)
  assert noise[0]["out"].shape == (steps, batch, H)
  assert noise[1]["out"] is None  # the top layer's output is never dropped
  for name, rate in (("inp", 0.5), ("rec", 0.5), ("out", 0.25)):
    for l in range(2):
      m = noise[l][name]
      if m is None:
        continue
      m = np.asarray(m)
      assert set(np.unique(m)) <= {0.0, np.float32(1.0 / (1.0 - rate))}, (name, l)
      assert abs((m == 0).mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / m.size), (name, l)
  # `out` is fresh per step; different layers draw different masks.
  out = np.asarray(noise[0]["out"])
  assert not all(np.array_equal(out[0], out[t]) for t in range(1, steps))
  assert not np.array_equal(np.asarray(noise[0]["rec"]), np.asarray(noise[1]["rec"]))
  # Drawn from the key alone.
  again = draw_noise(model, KEY, steps, batch)
  for a, b in zip(jax.tree.leaves(noise), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("engine,execution", [("scan", "layer_major"), ("vjp", "layer_major"),
                                              ("scan", "time_major")])
@pytest.mark.parametrize("cell", CELLS)
def test_model_equals_reference_with_one_recurrent_mask_per_sequence(cell, engine, execution):
  model = build(cell, engine=engine, execution=execution, **RATES)
  xs, _ = data()
  ys = model(xs, key=KEY)
  noise = draw_noise(model, KEY, T, B)
  np.testing.assert_allclose(ys, reference(model, xs, noise), **TOL)
  # Dropout is really on: the model differs from its eval mode.
  assert float(jnp.abs(ys - reference(model, xs, draw_noise(model, None, T, B))).max()) \
      > 1e-3
  # A fresh recurrent mask per step (the same mask at step 0, where h_{-1} = 0 anyway, and at
  # step 1) does not match.
  per_step = []
  for l, nz in enumerate(noise):
    fresh = [nz["rec"], nz["rec"]] + [
        jax.random.bernoulli(jax.random.fold_in(KEY, 1000 + 10 * t + l), 0.6, (B, H)) / 0.6
        for t in range(2, T)]
    per_step.append(jnp.stack(fresh).astype(jnp.float32))
  other = reference(model, xs, noise, rec_per_step=per_step)
  np.testing.assert_allclose(other[:, :2], ys[:, :2], **TOL)
  assert float(jnp.abs(other[:, 2:] - ys[:, 2:]).max()) > 1e-3


@pytest.mark.parametrize("engine", ["scan", "vjp", "time_major"])
def test_recurrent_mask_observably_constant_over_time(engine):
  # A linear RNN with W_h = I, W_x = I, b = 0 and an input at t = 0 only: h_t = x_0 ⊙ d_1 ⊙ ...
  # ⊙ d_t, so with one mask d per sequence h_t = h_1 ⊙ d^(t-1), and the set of dropped units
  # never grows after step 1.
  size, q = 8, 0.5
  model = models.build(
      dict(cell="rnn", hidden_size=size, activation="identity", recurrent_dropout=q,
           engine="vjp" if engine == "vjp" else "scan",
           execution="time_major" if engine == "time_major" else "layer_major"),
      in_features=size, out_features=None, rngs=nnx.Rngs(0))
  cell = model.layers[0]
  cell.w_h[...] = jnp.eye(size)
  cell.w_x[...] = jnp.eye(size)
  cell.b[...] = jnp.zeros_like(cell.b[...])
  x0 = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, size=(B, size)), jnp.float32)
  xs = jnp.zeros((B, T, size)).at[:, 0].set(x0)
  hs = np.asarray(model(xs, key=KEY))
  np.testing.assert_allclose(hs[:, 0], x0, **TOL)
  d = hs[:, 1] / np.asarray(x0)  # the effective mask of step 1
  np.testing.assert_allclose(np.sort(np.unique(np.round(d, 5))), [0.0, 2.0])
  for t in range(1, T):
    np.testing.assert_allclose(hs[:, t], hs[:, 1] * d ** (t - 1), **TOL)
  # Each row has its own mask.
  assert len({tuple(row) for row in (d > 0)}) > 1


# ------------------------------------------------------------------------- dropout between layers


@pytest.mark.parametrize("cell", CELLS)
def test_eval_mode_equals_rates_zero(cell):
  xs, mask = data()
  plain = build(cell)
  model = build(cell, **RATES)
  want = plain(xs, mask)
  assert float(jnp.abs(model(xs, mask, key=KEY) - want).max()) > 1e-3
  model.eval()
  np.testing.assert_array_equal(model(xs, mask), want)
  np.testing.assert_array_equal(model(xs, mask, key=KEY), want)  # the key is not used
  model.train()
  with pytest.raises(ValueError, match="key"):
    model(xs, mask)


@pytest.mark.parametrize("rates", [dict(dropout=0.2), dict(recurrent_dropout=0.2),
                                   dict(recurrent_dropout=0.2, recurrent_dropout_inputs=True)])
def test_training_mode_without_key_raises(rates):
  model = build("gru", **rates)
  xs, mask = data()
  with pytest.raises(ValueError, match="key"):
    model(xs, mask)


def test_no_dropout_needs_no_key():
  xs, mask = data()
  build("gru", recurrent_dropout_inputs=True)(xs, mask)  # rates 0: inputs dropout is off too


def test_same_key_same_outputs_other_key_differs():
  model = build("gru", **RATES)
  xs, mask = data()
  a = model(xs, mask, key=KEY)
  np.testing.assert_array_equal(model(xs, mask, key=KEY), a)
  np.testing.assert_array_equal(model(xs, mask, key=jax.random.PRNGKey(7)), a)
  b = model(xs, mask, key=jax.random.PRNGKey(8))
  assert float(jnp.abs(a - b).max()) > 1e-3


@pytest.mark.parametrize("cell", CELLS)
def test_top_layer_output_is_never_dropped(cell):
  xs, mask = data()
  # One layer with `dropout` only: nothing is dropped.
  one = build(cell, layers=1, dropout=0.5)
  np.testing.assert_array_equal(one(xs, mask, key=KEY), build(cell, layers=1)(xs, mask))
  # Two layers: the top layer's h has no dropped (exactly zero) units, though layer 0's does.
  two = build(cell, out=None, dropout=0.5)
  hs = np.asarray(two(xs, key=KEY))
  assert np.all(hs != 0.0)
  assert float(np.abs(hs - np.asarray(build(cell, out=None)(xs))).max()) > 1e-3


def test_dropout_scale_keeps_the_mean():
  # Inverted dropout: E[h ⊙ m / (1 - p)] = h. Averaged over many keys, a one-layer linear model
  # with input dropout (recurrent_dropout_inputs, rec dropout off by W_h = 0) matches eval.
  model = models.build(dict(cell="rnn", hidden_size=H, activation="identity",
                            recurrent_dropout=0.5, recurrent_dropout_inputs=True),
                       in_features=F, out_features=None, rngs=nnx.Rngs(0))
  model.layers[0].w_h[...] = jnp.zeros_like(model.layers[0].w_h[...])
  xs, _ = data()
  keys = jax.random.split(KEY, 20000)
  mean = jax.jit(jax.vmap(lambda k: model(xs, key=k)))(keys).mean(axis=0)
  model.eval()
  np.testing.assert_allclose(mean, model(xs), atol=0.1)


# ---------------------------------------------------------------------------- execution paths


@functools.lru_cache(maxsize=None)
def cached_grads(cell: str, engine: str = "scan", execution: str = "layer_major",
                 dropout: bool = True):
  """grads() of the model of (cell, engine, execution), with RATES or without dropout, on
  data() and KEY; computed once per configuration (compiles dominate this file's time)."""
  xs, mask = data()
  engine, remat = engine.removesuffix("+remat"), engine.endswith("+remat")
  model = build(cell, engine=engine, execution=execution, remat=remat,
                **(RATES if dropout else {}))
  assert model.time_major == (execution == "time_major")
  return grads(model, xs, mask, KEY if dropout else None)


@pytest.mark.parametrize("cell,engine", [("lstm", "scan"), ("gru", "scan"), ("rnn", "scan"),
                                         ("lstm", "vjp")])
def test_layer_major_equals_time_major_under_dropout(cell, engine):
  xs, mask = data()
  lm = build(cell, engine=engine, **RATES)
  tm = build(cell, engine=engine, execution="time_major", **RATES)
  np.testing.assert_allclose(tm(xs, mask, key=KEY), lm(xs, mask, key=KEY), **TOL)
  assert_trees_close(cached_grads(cell, engine, "time_major"), cached_grads(cell, engine),
                     atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell,engine", [(c, e) for c in CELLS for e in ("vjp", "vjp_hoisted")]
                         + [("lstm", "vjp+remat"), ("gru", "vjp_hoisted+remat"),
                            ("rnn", "scan+remat")])
def test_custom_vjp_gradients_equal_scan_under_dropout(cell, engine):
  got = cached_grads(cell, engine)
  assert_trees_close(got, cached_grads(cell, "scan"), atol=1e-5, rtol=1e-5)
  # The gradient sees the masks: it differs from the gradient without dropout.
  plain = cached_grads(cell, "scan", dropout=False)
  assert float(jnp.abs(got[0]["layers"][1]["w_h"] - plain[0]["layers"][1]["w_h"]).max()) > 1e-4


@pytest.mark.parametrize("cell", CELLS)
def test_streaming_never_drops(cell):
  model = build(cell, **RATES)
  xs, mask = data()
  state, ys = model.initial_state(B), []
  for t in range(T):
    state, y = model.step(state, xs[:, t], mask[:, t])
    ys.append(y)
  streamed = jnp.stack(ys, axis=1)
  assert float(jnp.abs(streamed - model(xs, mask, key=KEY)).max()) > 1e-3
  model.eval()
  np.testing.assert_allclose(streamed, model(xs, mask), **TOL)


@pytest.mark.parametrize("engine", ["scan", "vjp"])
@pytest.mark.parametrize("cell", CELLS)
def test_masking_invariance_under_dropout(cell, engine):
  kw = dict(execution="time_major") if engine == "time_major" else dict(engine=engine)
  model = build(cell, **kw, **RATES)
  xs, mask = data()
  pad = jnp.asarray(100.0 * np.random.default_rng(1).normal(size=xs.shape), jnp.float32)
  padded = jnp.where(mask[..., None], xs, pad)
  ys, final = model(xs, mask, key=KEY, return_state=True)
  ys2, final2 = model(padded, mask, key=KEY, return_state=True)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(ys2)[valid], np.asarray(ys)[valid], atol=1e-6, rtol=1e-6)
  assert np.all(np.asarray(ys2)[~valid] == 0.0)
  assert_trees_close(final2, final, atol=1e-6, rtol=1e-6)
  # And the gradient w.r.t. the padded inputs is zero.
  _, dxs = grads(model, padded, mask, KEY)
  assert np.all(np.asarray(dxs)[~valid] == 0.0)


@pytest.mark.parametrize("key", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_bad_rates_raise_naming_the_key(key, value):
  with pytest.raises(ValueError, match=rf"config\.model\.{key} must be in \[0, 1\)"):
    models.build({"cell": "lstm", "hidden_size": H, key: value}, in_features=F,
                 out_features=O, rngs=nnx.Rngs(0))


def test_rate_just_below_one_is_accepted():
  model = build("rnn", dropout=0.99, recurrent_dropout=0.99)
  xs, mask = data()
  assert np.all(np.isfinite(np.asarray(model(xs, mask, key=KEY))))
