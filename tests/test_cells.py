"""Cells: gradient checks (one step, and a sequence through the custom-VJP engine), parity with
flax.nnx's cells, the recurrent initialisers, and the activation registry."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rnn_research.core import engine, models
from rnn_research.core.activations import ACTIVATIONS
from rnn_research.core.carry import Carry
from rnn_research.core.cells import CELLS, LSTM_VARIANTS
from rnn_research.core.initializers import RECURRENT_INITS
from rnn_research.core.spec import resolve
from rnn_research.core.step import cell_step
from rnn_research.core.vjp import scan_custom_vjp

B, T, F, H = 2, 4, 3, 3
TOL = dict(atol=1e-5, rtol=1e-5)

CELL_CONFIGS = {
    "rnn": dict(cell="rnn"),
    "rnn_mlp": dict(cell="rnn", transition="mlp", mlp_hidden=4),
    "rnn_softsign": dict(cell="rnn", activation="softsign"),
    "gru": dict(cell="gru"),
    "lstm_lecture_peephole": dict(cell="lstm", lstm_variant="lecture", lecture_peephole=True),
}
CELL_CONFIGS.update({f"lstm_{v}": dict(cell="lstm", lstm_variant=v)
                     for v in LSTM_VARIANTS.names()})
SEQUENCE_CELLS = ("rnn", "rnn_mlp", "gru", "lstm_standard", "lstm_peephole", "lstm_fgr",
                  "lstm_lecture_peephole")


def make_cell(name: str, in_features: int = F, **overrides):
  spec = resolve({"hidden_size": H, **CELL_CONFIGS[name], **overrides})
  return models.build_cells(spec, in_features, nnx.Rngs(0))[0]


@pytest.fixture(scope="class")
def x64():
  """float64 for the finite-difference checks; restores the previous setting."""
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", old)


def f64_args(cell, rng):
  """float64 weights (biases perturbed off zero) and carry for one cell."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), cell.weights())
  leaves, treedef = jax.tree.flatten(p)
  p = jax.tree.unflatten(treedef, [jnp.asarray(a + 0.1 * rng.normal(size=a.shape), jnp.float64)
                                   for a in leaves])
  carry = jax.tree.map(lambda c: jnp.asarray(0.5 * rng.normal(size=c.shape), jnp.float64),
                       cell.initial_carry(B))
  return p, carry


@pytest.mark.usefixtures("x64")
class TestGradientChecks:
  """Finite differences in float64 (class-scoped, so x64 is switched once, then restored)."""

  @pytest.mark.parametrize("name", sorted(CELL_CONFIGS))
  def test_one_step(self, name):
    cell = make_cell(name)
    rng = np.random.default_rng(0)
    p, carry = f64_args(cell, rng)
    x = jnp.asarray(rng.normal(size=(B, F)), jnp.float64)
    m = jnp.asarray([True, False])
    if name == "lstm_lecture_peephole":
      # c_{t-1} enters through stop_gradient (c* of eq. 13.4): finite differences in the
      # carry see that path, autodiff by design does not, so the carry is held fixed here.
      f = jax.jit(lambda p, x: cell_step(cell, p, carry, x, m)[:2])
      args = (p, x)
    else:
      f = jax.jit(lambda p, carry, x: cell_step(cell, p, carry, x, m)[:2])
      args = (p, carry, x)
    _, y = f(*args)
    assert y.dtype == jnp.float64 and y.shape == (B, H)
    # Forward mode as well for the three base cells (each mode costs a compile).
    modes = ["fwd", "rev"] if name in ("rnn", "gru", "lstm_standard") else ["rev"]
    check_grads(f, args, order=1, modes=modes, atol=1e-5, rtol=1e-5)

  @pytest.mark.parametrize("name,how", [(name, ("vjp", False)) for name in SEQUENCE_CELLS] + [
      ("lstm_standard", ("vjp_hoisted", True)), ("gru", ("vjp_hoisted", True)),
      ("lstm_fgr", ("vjp", True))])
  def test_sequence_custom_vjp(self, name, how):
    cell = make_cell(name)
    strategy = engine.strategy(*how)
    assert strategy.custom_vjp
    rng = np.random.default_rng(1)
    p, carry0 = f64_args(cell, rng)
    if name == "lstm_lecture_peephole":
      # Over a sequence c_{t-1} depends on the inputs, and its stop_gradient path is invisible
      # to autodiff by design; with W_c = 0 that path has zero derivative, so finite
      # differences and autodiff agree again (dW_c itself is still checked).
      p["pw"]["w_c"] = jnp.zeros_like(p["pw"]["w_c"])
    xs = jnp.asarray(rng.normal(size=(T, B, F)), jnp.float64)
    mask = jnp.arange(T)[:, None] < jnp.asarray([T, 2])[None, :]  # [T, B]
    f = jax.jit(lambda p, xs, carry0: scan_custom_vjp(cell, p, xs, mask, carry0, strategy))
    args = (p, xs, carry0)
    ys, _ = f(*args)
    assert ys.shape == (T, B, H) and ys.dtype == jnp.float64
    check_grads(f, args, order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


# --- parity with flax.nnx's cells ---------------------------------------------------------


def randomize(module, rng):
  """Random values in every Param (biases included), in place."""
  params = nnx.state(module, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  nnx.update(module, jax.tree.unflatten(
      treedef, [jnp.asarray(0.5 * rng.normal(size=a.shape), a.dtype) for a in leaves]))


def flax_cell(kind: str, activation):
  rngs = nnx.Rngs(1)
  if kind == "lstm":
    return nnx.OptimizedLSTMCell(F, H, activation_fn=activation, rngs=rngs)
  if kind == "gru":
    return nnx.GRUCell(F, H, activation_fn=activation, rngs=rngs)
  return nnx.SimpleCell(F, H, activation_fn=activation, rngs=rngs)


def copy_flax_weights(kind: str, theirs, ours):
  if kind == "lstm":
    ours.w_x[...] = theirs.dense_i.kernel[...]
    ours.w_h[...] = theirs.dense_h.kernel[...]
    ours.b[...] = theirs.dense_h.bias[...]
  elif kind == "gru":
    ours.w_x[...] = theirs.dense_i.kernel[...]
    ours.b[...] = theirs.dense_i.bias[...]
    ours.w_h[...] = theirs.dense_h.kernel[...]
    ours.b_hn[...] = jnp.zeros_like(ours.b_hn[...])
  else:
    ours.w_x[...] = theirs.dense_i.kernel[...]
    ours.b[...] = theirs.dense_i.bias[...]
    ours.w_h[...] = theirs.dense_h.kernel[...]


@pytest.mark.parametrize("kind,activation", [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"),
                                             ("rnn", "relu"), ("lstm", "softsign")])
def test_parity_with_flax_nnx_cells(kind, activation):
  act = ACTIVATIONS.get(activation)
  theirs = flax_cell(kind, act)
  rng = np.random.default_rng(2)
  randomize(theirs, rng)
  rnn = nnx.RNN(theirs, return_carry=True)
  model = models.build(dict(cell=kind, hidden_size=H, activation=activation), in_features=F,
                       out_features=None, rngs=nnx.Rngs(0))
  copy_flax_weights(kind, theirs, model.layers[0])
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)

  carry_theirs, ys_theirs = rnn(xs)
  ys, final = model(xs, return_state=True)
  assert float(jnp.abs(ys_theirs).max()) > 1e-3
  np.testing.assert_allclose(ys, ys_theirs, **TOL)
  (ours,) = final
  if kind == "lstm":  # flax's LSTM carry is (c, h), ours (h, c)
    np.testing.assert_allclose(ours[0], carry_theirs[1], **TOL)
    np.testing.assert_allclose(ours[1], carry_theirs[0], **TOL)
  else:
    np.testing.assert_allclose(ours[0], carry_theirs, **TOL)

  # Variable length: flax's seq_lengths vs our mask agree on valid outputs and final carry.
  lengths = jnp.asarray([T, 2])
  carry_theirs, ys_theirs = rnn(xs, seq_lengths=lengths)
  mask = jnp.arange(T)[None, :] < lengths[:, None]
  ys, final = model(xs, mask, return_state=True)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(ys)[valid], np.asarray(ys_theirs)[valid], **TOL)
  h_theirs = carry_theirs[1] if kind == "lstm" else carry_theirs
  np.testing.assert_allclose(final[0][0], h_theirs, **TOL)


def test_gru_b_hn_sits_inside_the_reset_gate():
  """b_hn is the bias of W_hn h (multiplied by r), not of W_xn x: with r = 0 it vanishes."""
  cell = make_cell("gru")
  p = cell.weights()
  z = jnp.zeros((1, 3 * H)).at[:, :H].set(-1e4)  # r = sigmoid(-1e4) = 0
  zh = jnp.zeros((1, H))  # the columns zh_columns() selects: h W_hn
  carry = Carry(jnp.zeros((1, H)))
  _, y0 = cell.pointwise(p["pw"], z, zh, carry)
  _, y1 = cell.pointwise({"b_hn": jnp.full((H,), 3.0)}, z, zh, carry)
  np.testing.assert_allclose(y0, y1, atol=1e-6)
  z_open = z.at[:, :H].set(1e4)  # r = 1
  _, y2 = cell.pointwise({"b_hn": jnp.full((H,), 3.0)}, z_open, zh, carry)
  _, y3 = cell.pointwise(p["pw"], z_open, zh, carry)
  assert float(jnp.abs(y2 - y3).max()) > 1e-2


# --- recurrent initialisers --------------------------------------------------------------


def gate_blocks(cell):
  w_h = np.asarray(cell.w_h[...])
  assert w_h.shape[1] % cell.hidden_size == 0
  return np.split(w_h, w_h.shape[1] // cell.hidden_size, axis=1)


@pytest.mark.parametrize("scale", [1.0, 0.7])
@pytest.mark.parametrize("name,gates", [("rnn", 1), ("gru", 3), ("lstm_standard", 4),
                                        ("lstm_lecture", 3)])
def test_orthogonal_init_singular_values(name, gates, scale):
  cell = make_cell(name, hidden_size=4, recurrent_init="orthogonal", recurrent_scale=scale)
  blocks = gate_blocks(cell)
  assert len(blocks) == gates
  for block in blocks:
    np.testing.assert_allclose(np.linalg.svd(block, compute_uv=False), scale, **TOL)
  if gates > 1:  # independent draws per gate, not one matrix repeated
    assert np.abs(blocks[0] - blocks[1]).max() > 1e-3


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("name", ["rnn", "gru", "lstm_standard"])
def test_identity_init(name, scale):
  cell = make_cell(name, hidden_size=4, recurrent_init="identity", recurrent_scale=scale)
  for block in gate_blocks(cell):
    np.testing.assert_array_equal(block, scale * np.eye(4, dtype=np.float32))


@pytest.mark.parametrize("init", ["normal", "lecun"])
def test_normal_inits_std(init):
  size, scale = 64, 1.5
  cell = make_cell("rnn", hidden_size=size, recurrent_init=init, recurrent_scale=scale)
  w_h = np.asarray(cell.w_h[...])
  assert w_h.shape == (size, size)
  assert abs(w_h.mean()) < 0.1 * scale / np.sqrt(size) * 3
  np.testing.assert_allclose(w_h.std(), scale / np.sqrt(size), rtol=0.1)


def test_recurrent_init_registry():
  assert {"orthogonal", "identity", "normal", "lecun"} <= set(RECURRENT_INITS.names())
  with pytest.raises(ValueError, match="unknown recurrent_init 'eye'") as info:
    make_cell("rnn", recurrent_init="eye")
  for choice in ("orthogonal", "identity", "normal", "lecun"):
    assert choice in str(info.value)


# --- activations -------------------------------------------------------------------------


def test_activation_registry_contents():
  names = set(ACTIVATIONS.names())
  assert {"tanh", "sigmoid", "relu", "identity", "hard_tanh", "gelu", "softsign",
          "leaky_relu"} <= names
  a = jnp.asarray([-3.0, -0.5, 0.0, 0.5, 3.0])
  expected = {
      "tanh": np.tanh(a),
      "sigmoid": 1 / (1 + np.exp(-a)),
      "relu": np.maximum(a, 0),
      "identity": a,
      "hard_tanh": np.clip(a, -1, 1),
      "softsign": a / (1 + np.abs(a)),
  }
  for name, want in expected.items():
    np.testing.assert_allclose(ACTIVATIONS.get(name)(a), want, **TOL, err_msg=name)
  leaky = ACTIVATIONS.get("leaky_relu")(a)
  assert float(leaky[0]) < 0 and float(leaky[-1]) == 3.0
  np.testing.assert_allclose(ACTIVATIONS.get("gelu")(a)[2:], jax.nn.gelu(a[2:]), **TOL)


@pytest.mark.parametrize("activation", ["relu", "identity", "hard_tanh"])
def test_cell_uses_configured_activation(activation):
  cell = make_cell("rnn", activation=activation)
  assert cell.activation is ACTIVATIONS.get(activation)
  z = jnp.asarray([[-2.0, 0.3, 2.0]])
  _, y = cell.pointwise({}, z, z, cell.initial_carry(1))
  np.testing.assert_allclose(y, ACTIVATIONS.get(activation)(z), **TOL)


@pytest.mark.parametrize("name", ["rnn_mlp", "gru", "lstm_peephole", "lstm_lecture_peephole"])
def test_cells_build_from_explicit_arguments_as_from_the_spec(name):
  """A cell needs no config: its constructor's arguments give the same cell as the spec."""
  spec = resolve({"hidden_size": H, **CELL_CONFIGS[name], "recurrent_scale": 0.7})
  cls = CELLS.get(spec.cell)
  own = {arg: getattr(spec, key) for arg, key in cls.spec_args.items()}
  direct = cls(F, H, rngs=nnx.Rngs(0), recurrent_scale=0.7, **own)
  for a, b in zip(jax.tree.leaves(nnx.state(direct)), jax.tree.leaves(nnx.state(make_cell(
      name, recurrent_scale=0.7)))):
    np.testing.assert_array_equal(a, b)
  x, carry = jnp.ones((B, F)), direct.initial_carry(B)
  assert cell_step(direct, direct.weights(), carry, x, None)[1].shape == (B, H)


def test_lstm_cell_with_its_variant_needs_no_config():
  cell = CELLS.get("lstm")(F, H, variant="cifg", forget_bias=2.0, rngs=nnx.Rngs(0))
  assert cell.variant == LSTM_VARIANTS.get("cifg") and cell.w_x.shape == (F, 3 * H)
  assert set(cell.initial_carry(B)._asdict()) >= {"h", "c"}
  np.testing.assert_array_equal(cell.b[...][:H], 2.0)  # forget block first: gates (f, g, o)


def test_unknown_activation_lists_choices():
  with pytest.raises(ValueError, match="unknown activation 'swishy'") as info:
    make_cell("lstm_standard", activation="swishy")
  for choice in ("tanh", "relu", "gelu"):
    assert choice in str(info.value)
