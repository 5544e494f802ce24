"""minGRU / minLSTM (Feng et al. 2024): the associative-scan layer against the sequential step.

The parallel path (`parallel_scan.run`, what `engine.run_layer` runs for cells without W_h)
must equal a plain `lax.scan` over `step.cell_step` (the streaming / time-major step) in values
and gradients, with masks of random valid-prefix lengths and with resets; and the model built
from a config keeps the stack's contract (streaming == full call, layer_major == time_major,
masking invariance, causality). Bad combinations fail at build.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import engine, models, parallel_scan
from rnn_research.core.carry import Carry
from rnn_research.core.cells import CELLS
from rnn_research.core.spec import resolve
from rnn_research.core.step import cell_step

import param_noise
from step_reference import model_data, sequential

B, T, F, H, O = 3, 13, 3, 4, 2
TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=2e-5, rtol=2e-5)
MIN_CELLS = ("min_gru", "min_lstm")


def make_cell(name: str, **overrides):
  return models.build_cells(resolve({"cell": name, "hidden_size": H, **overrides}), F,
                            nnx.Rngs(0))[0]


def random_weights(cell, rng):
  """The cell's weights, every one (the zero biases included) moved off its initial value."""
  leaves, treedef = jax.tree.flatten(cell.weights())
  return jax.tree.unflatten(treedef, [
      a + jnp.asarray(0.5 * rng.normal(size=a.shape), a.dtype) for a in leaves])


def random_inputs(rng, t: int = T):
  """xs [t, B, F], a mask of valid prefixes of random lengths (one full, one empty),
  resets [t, B], init and carry0 (h [B, H],)."""
  xs = jnp.asarray(rng.normal(size=(t, B, F)), jnp.float32)
  lengths = np.concatenate([[t, 0], rng.integers(1, t, size=B - 2)])
  mask = jnp.asarray(np.arange(t)[:, None] < lengths[None, :])
  resets = jnp.asarray(rng.random(size=(t, B)) < 0.2)
  init = Carry(jnp.asarray(rng.normal(size=(B, H)), jnp.float32))
  carry0 = Carry(jnp.asarray(rng.normal(size=(B, H)), jnp.float32))
  return xs, mask, resets, init, carry0


def parallel(cell, p, xs, mask, carry0, resets=None, init=None):
  return parallel_scan.run(cell, p, xs, mask, carry0, resets=resets, init=init)


def loss_and_grads(fn, cell, p, xs, mask, carry0, resets, init, cot):
  """(ys, final), and d/d(p, xs, carry0, init) of <ys, cot_y> + <h_T, cot_h>."""
  def loss(p, xs, carry0, init):
    ys, final = fn(cell, p, xs, mask, carry0, resets, init)
    return jnp.sum(ys * cot[0]) + jnp.sum(final[0] * cot[1]), (ys, final)

  grads, out = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(p, xs, carry0, init)
  return out, grads


@pytest.mark.parametrize("case", ["plain", "mask", "resets", "mask_resets", "resets_zero_init"])
@pytest.mark.parametrize("name", MIN_CELLS)
def test_associative_scan_equals_sequential_step(name, case):
  """Values to 1e-5 and gradients w.r.t. weights, inputs, carry0 and init, over T = 13 (not a
  power of two) with prefix masks of random lengths (one full, one empty) and random resets."""
  cell = make_cell(name)
  rng = np.random.default_rng(len(case))  # python's str hash is salted per process
  p = random_weights(cell, rng)
  xs, mask, resets, init, carry0 = random_inputs(rng)
  mask = mask if "mask" in case else None
  resets = resets if "resets" in case else None
  if case == "resets_zero_init":
    init = None
  cot = (jnp.asarray(rng.normal(size=(T, B, H)), jnp.float32),
         jnp.asarray(rng.normal(size=(B, H)), jnp.float32))
  args = (cell, p, xs, mask, carry0, resets, init, cot)
  (ys, final), grads = loss_and_grads(parallel, *args)
  (ys_ref, final_ref), grads_ref = loss_and_grads(sequential, *args)
  assert ys.shape == (T, B, H) and float(jnp.abs(ys_ref).max()) > 1e-2
  np.testing.assert_allclose(ys, ys_ref, **TOL)
  np.testing.assert_allclose(final[0], final_ref[0], **TOL)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(got, want, **GRAD_TOL)
  exercised = grads_ref[:3] if resets is None else grads_ref  # init is read only by resets
  assert all(float(jnp.abs(g).max()) > 1e-3 for g in jax.tree.leaves(exercised))
  if resets is None and init is not None:
    assert float(jnp.abs(grads[3][0]).max()) == 0.0
  if mask is not None:
    np.testing.assert_array_equal(np.asarray(ys)[~np.asarray(mask)], 0.0)


@pytest.mark.parametrize("name", MIN_CELLS)
def test_run_layer_runs_every_engine_for_a_cell_without_w_h(name):
  """`associative` runs the associative scan, the others a sequential scan of the same linear
  recurrence (also with remat): all equal the sequential step."""
  cell = make_cell(name)
  rng = np.random.default_rng(3)
  p = random_weights(cell, rng)
  xs, mask, resets, init, carry0 = random_inputs(rng)
  assert not cell.recurrent and "w_h" not in p
  ys_ref, final_ref = sequential(cell, p, xs, mask, carry0, resets, init)
  for name_, remat in (("associative", False), ("associative", True), ("vjp", False),
                       ("scan_hoisted", True), ("auto", False)):
    how = engine.strategy(name_, remat)
    ys, final, _ = jax.jit(lambda p, xs: engine.run_layer(cell, p, xs, mask, carry0, how,
                                                          resets=resets, init=init))(p, xs)
    np.testing.assert_allclose(ys, ys_ref, **TOL)
    np.testing.assert_allclose(final[0], final_ref[0], **TOL)


@pytest.mark.parametrize("name", MIN_CELLS)
def test_reset_equals_a_fresh_sequence(name):
  """A reset at t0 makes the outputs from t0 on those of a fresh sequence starting at t0 from
  `init` (zeros when init is None), whatever came before."""
  cell = make_cell(name)
  rng = np.random.default_rng(4)
  p = random_weights(cell, rng)
  xs, _, _, init, carry0 = random_inputs(rng)
  t0 = 5
  resets = jnp.zeros((T, B), bool).at[t0].set(True)
  run = jax.jit(parallel, static_argnums=0)
  for start in (init, None):
    ys, final = run(cell, p, xs, None, carry0, resets, start)
    fresh0 = Carry(jnp.zeros((B, H))) if start is None else start
    ys_fresh, final_fresh = run(cell, p, xs[t0:], None, fresh0)
    np.testing.assert_allclose(ys[t0:], ys_fresh, **TOL)
    np.testing.assert_allclose(final[0], final_fresh[0], **TOL)
    ys_before, _ = run(cell, p, xs[:t0], None, carry0)  # the steps before are untouched
    np.testing.assert_allclose(ys[:t0], ys_before, **TOL)


@pytest.mark.parametrize("name", MIN_CELLS)
def test_matches_the_paper_equations(name):
  """One step against the equations written out in numpy (minLSTM with f/(f+i) literally)."""
  cell = make_cell(name)
  rng = np.random.default_rng(6)
  p = jax.tree.map(np.asarray, random_weights(cell, rng))
  x = rng.normal(size=(B, F)).astype(np.float32)
  h = rng.normal(size=(B, H)).astype(np.float32)
  sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
  z = x @ p["w_x"] + p["b"]
  if name == "min_gru":
    gate, cand = sig(z[:, :H]), z[:, H:]
    want = (1 - gate) * h + gate * cand
  else:
    f, i, cand = sig(z[:, :H]), sig(z[:, H:2 * H]), z[:, 2 * H:]
    want = f / (f + i) * h + i / (f + i) * cand
  new, y, _ = cell_step(cell, p, Carry(jnp.asarray(h)), jnp.asarray(x), None)
  got = new.h
  np.testing.assert_allclose(got, want, **TOL)
  np.testing.assert_array_equal(got, y)


def test_min_lstm_normalised_gates_sum_to_one():
  """f' + i' = 1, also where both gates saturate (no 0/0): with candidate 1, a + b = 1."""
  cell = make_cell("min_lstm")
  rng = np.random.default_rng(7)
  gates = np.concatenate([20 * rng.normal(size=(50, 2 * H)),
                          np.full((1, 2 * H), -200.0), np.full((1, 2 * H), 200.0)])
  z = jnp.asarray(np.concatenate([gates, np.ones((gates.shape[0], H))], axis=1), jnp.float32)
  a, b = cell.coefficients({}, z)
  assert bool(jnp.all(jnp.isfinite(a))) and bool(jnp.all((a >= 0) & (a <= 1)))
  np.testing.assert_allclose(a + b, 1.0, atol=1e-6)
  # f' = f / (f + i) against float64 log space: 1 / (1 + exp(log i - log f)).
  log_sig = lambda v: -np.logaddexp(0.0, -v)  # noqa: E731
  want = 1.0 / (1.0 + np.exp(log_sig(gates[:, H:]) - log_sig(gates[:, :H])))
  np.testing.assert_allclose(a, want, atol=1e-6)
  mixed = jnp.asarray([[-200.0] * H + [-100.0] * H + [1.0] * H], jnp.float32)
  np.testing.assert_allclose(cell.coefficients({}, mixed)[0], 0.0, atol=1e-30)  # f << i, both ~0
  g = jax.grad(lambda z: jnp.sum(sum(cell.coefficients({}, z))))(z)
  assert bool(jnp.all(jnp.isfinite(g)))


def test_min_gru_gates_sum_to_one():
  cell = make_cell("min_gru")
  z = jnp.concatenate([jnp.linspace(-30, 30, 5 * H).reshape(5, H), jnp.ones((5, H))], axis=1)
  a, b = cell.coefficients({}, z)
  np.testing.assert_allclose(a + b, 1.0, atol=1e-6)


@pytest.mark.parametrize("name", MIN_CELLS)
def test_no_recurrent_matrix(name):
  cell = make_cell(name)
  assert cell.recurrent is False and type(cell).recurrent is False
  assert not hasattr(cell, "w_h") and set(cell.weights()) == {"w_x", "b", "pw"}
  gates = 2 if name == "min_gru" else 3
  assert cell.w_x[...].shape == (F, gates * H)
  params = nnx.state(models.build(dict(cell=name, hidden_size=H), in_features=F,
                                  out_features=None, rngs=nnx.Rngs(0)), nnx.Param)
  assert all("w_h" not in jax.tree_util.keystr(path)
             for path, _ in jax.tree_util.tree_flatten_with_path(params)[0])
  assert make_cell("gru").recurrent is True and "w_h" in make_cell("gru").weights()


# --- the model built from a config ---------------------------------------------------------


def build(name: str, **overrides):
  """engine='associative' unless overridden: the full call runs the associative scan, the
  path the model-level properties below check against streaming and time_major."""
  cfg = dict(dict(cell=name, hidden_size=H, num_layers=2, engine="associative"), **overrides)
  model = models.build(cfg, in_features=F, out_features=O, rngs=nnx.Rngs(0))
  return param_noise.perturb(model, 0.3)


def split_call(model):
  graphdef, state = nnx.split(model)

  @jax.jit
  def call(state, xs, mask):
    return nnx.merge(graphdef, state)(xs, mask, return_state=True)

  @jax.jit
  def stream(state, xs, mask):
    m = nnx.merge(graphdef, state)

    def body(carry, inputs):
      return m.step(carry, *inputs)

    final, ys = jax.lax.scan(body, m.initial_state(xs.shape[0]),
                             (jnp.swapaxes(xs, 0, 1), mask.T))
    return jnp.swapaxes(ys, 0, 1), final

  return (lambda xs, mask: call(state, xs, mask)), (lambda xs, mask: stream(state, xs, mask))


@pytest.mark.parametrize("overrides", [{}, dict(norm="mini_layer", vertical_skip="residual"),
                                       dict(vertical_skip="dense", readout="mlp",
                                            readout_hidden=3)],
                         ids=["plain", "mini_layer_residual", "dense_mlp_readout"])
@pytest.mark.parametrize("name", MIN_CELLS)
def test_model_streaming_time_major_and_masking(name, overrides):
  """num_layers=2: streaming `model.step` == the full call (outputs and final state),
  layer_major == time_major, padded inputs change no valid output, outputs 0 at padding."""
  model = build(name, **overrides)
  twin = build(name, execution="time_major", **overrides)
  xs, mask, pad = model_data(F)
  call, stream = split_call(model)
  ys, final = call(xs, mask)
  assert ys.shape == (B, 8, O) and float(jnp.abs(ys).max()) > 1e-2
  ys_stream, final_stream = stream(xs, mask)
  np.testing.assert_allclose(ys_stream, ys, **TOL)
  for a, b in zip(jax.tree.leaves(final_stream), jax.tree.leaves(final)):
    np.testing.assert_allclose(a, b, **TOL)
  ys_tm, final_tm = split_call(twin)[0](xs, mask)
  np.testing.assert_allclose(ys_tm, ys, **TOL)
  for a, b in zip(jax.tree.leaves(final_tm), jax.tree.leaves(final)):
    np.testing.assert_allclose(a, b, **TOL)
  ys_pad, final_pad = call(jnp.where(mask[..., None], xs, pad), mask)
  np.testing.assert_allclose(ys_pad, ys, **TOL)
  for a, b in zip(jax.tree.leaves(final_pad), jax.tree.leaves(final)):
    np.testing.assert_allclose(a, b, **TOL)
  np.testing.assert_array_equal(np.asarray(ys)[~np.asarray(mask)], 0.0)
  # A shorter padding tail (the same valid prefixes) gives the same valid outputs.
  ys_short, _ = call(xs[:, :4], mask[:, :4])
  np.testing.assert_allclose(ys_short, ys[:, :4], **TOL)


@pytest.mark.parametrize("name", MIN_CELLS)
def test_model_causality_and_gradients(name):
  """Changing x_t leaves y_{<t} unchanged and changes y_t; a training gradient is finite and
  non-zero for every parameter, and zero for padded inputs."""
  model = build(name)
  xs, mask, _ = model_data(F)
  call, _ = split_call(model)
  ys, _ = call(xs, None)
  for t0 in (0, 3, 7):
    ys2, _ = call(xs.at[:, t0].add(3.0), None)
    np.testing.assert_array_equal(ys2[:, :t0], ys[:, :t0])
    assert float(jnp.abs(ys2[:, t0] - ys[:, t0]).min()) > 0

  def loss(model, xs):
    return jnp.sum(model(xs, mask) ** 2)

  grads, d_xs = nnx.jit(nnx.grad(loss, argnums=(0, 1)))(model, xs)
  for path, g in jax.tree_util.tree_flatten_with_path(nnx.state(grads, nnx.Param))[0]:
    assert bool(jnp.all(jnp.isfinite(g))), path
    assert float(jnp.abs(g).max()) > 0, path
  assert float(jnp.abs(jnp.where(mask[..., None], 0.0, d_xs)).max()) == 0.0


@pytest.mark.slow  # T = 300, eagerly
@pytest.mark.parametrize("name", MIN_CELLS)
def test_long_sequence_continuation(name):
  """T = 300 in two halves with the state passed on equals one call (the scan's depth is
  log T; the carry at the seam is the associative prefix's last element)."""
  model = build(name)
  rng = np.random.default_rng(8)
  xs = jnp.asarray(rng.normal(size=(B, 300, F)), jnp.float32)
  full, state = model(xs, return_state=True)
  first, mid = model(xs[:, :170], return_state=True)
  second, state2 = model(xs[:, 170:], state=mid, return_state=True)
  np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), full, **TOL)
  for a, b in zip(jax.tree.leaves(state2), jax.tree.leaves(state)):
    np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.slow  # three models, eagerly (resets: test_reset_equals_a_fresh_sequence)
@pytest.mark.parametrize("name", MIN_CELLS)
def test_model_resets_with_learned_initial_state(name):
  """Through the model, with a learned initial state: resets in the full call (associative
  scan) == time_major == streaming with reset_t; the carry_init gets a gradient."""
  model = build(name, learned_initial_state=True)
  twin = build(name, learned_initial_state=True, execution="time_major")
  xs, mask, _ = model_data(F)
  resets = jnp.zeros(mask.shape, bool).at[0, 4].set(True).at[1, 2].set(True)
  ys, final = model(xs, mask, resets=resets, return_state=True)
  ys_tm, final_tm = twin(xs, mask, resets=resets, return_state=True)
  state, outs = model.initial_state(B), []
  for t in range(xs.shape[1]):
    state, y = model.step(state, xs[:, t], mask[:, t], resets[:, t])
    outs.append(y)
  for got in (ys_tm, jnp.stack(outs, axis=1)):
    np.testing.assert_allclose(got, ys, **TOL)
  for a, b, c in zip(jax.tree.leaves(final), jax.tree.leaves(final_tm), jax.tree.leaves(state)):
    np.testing.assert_allclose(b, a, **TOL)
    np.testing.assert_allclose(c, a, **TOL)
  # The reset row restarts: from t = 4 on, row 0 equals a fresh call on xs[:, 4:].
  fresh = model(xs[:, 4:], mask[:, 4:])
  np.testing.assert_allclose(ys[0, 4:], fresh[0], **TOL)

  def loss(model):
    return jnp.sum(model(xs, mask, resets=resets) ** 2)

  grads = nnx.grad(loss)(model)
  assert float(jnp.abs(grads.layers[0].carry_init[...]).max()) > 0


@pytest.mark.parametrize("name", MIN_CELLS)
def test_dropout_between_layers_composes(name):
  """dropout > 0: train-mode calls with one key agree layer_major vs time_major, differ from
  eval mode, and eval mode equals the same model without dropout."""
  model = build(name, dropout=0.3)
  twin = build(name, dropout=0.3, execution="time_major")
  plain = build(name)
  xs, mask, _ = model_data(F)
  key = jax.random.key(1)
  ys, ys_tm = model(xs, mask, key=key), twin(xs, mask, key=key)
  np.testing.assert_allclose(ys_tm, ys, **TOL)
  for m in (model, plain):
    m.eval()
  ys_eval = model(xs, mask)
  assert float(jnp.abs(ys - ys_eval).max()) > 1e-3
  np.testing.assert_allclose(ys_eval, plain(xs, mask), **TOL)


# --- bad configurations ----------------------------------------------------------------------


@pytest.mark.parametrize("overrides,match", [
    (dict(horizontal_skip="residual"), "horizontal_skip='residual' cannot combine"),
    (dict(horizontal_skip="learned", skip_span=2), "horizontal_skip='learned' cannot combine"),
    (dict(norm="mini_vertical"), "norm='mini_vertical' cannot combine"),
    (dict(norm="mini_vertical", norm_layers="1"), "norm='mini_vertical' cannot combine"),
    (dict(norm="vertical"), "norm='vertical' cannot combine"),
    (dict(transition="mlp"), "transition='mlp' is defined for cell='rnn' only"),
    (dict(recurrent_dropout=0.1), "recurrent_dropout=0.1 cannot combine"),
    (dict(norm="batch_per_step"), "has no W_h"),
])
@pytest.mark.parametrize("name", MIN_CELLS)
def test_bad_configs_fail_at_build(name, overrides, match):
  with pytest.raises(ValueError, match=match) as info:
    models.build(dict(cell=name, hidden_size=H, num_layers=2, **overrides), in_features=F,
                 out_features=O, rngs=nnx.Rngs(0))
  assert "use " in str(info.value)  # every message says what to use instead
  if overrides.get("norm") != "batch_per_step":
    assert "transition" in overrides or "associative scan" in str(info.value)
  with pytest.raises(ValueError, match=match):  # the spec alone refuses: no model is built
    resolve(dict(cell=name, hidden_size=H, num_layers=2, **overrides))


def test_min_cells_are_registered():
  assert {"min_gru", "min_lstm"} <= set(CELLS.names())
  with pytest.raises(ValueError, match="min_gru"):
    models.build(dict(cell="min_gur"), in_features=F, out_features=O, rngs=nnx.Rngs(0))


def test_parallel_scan_refuses_recurrent_cells():
  cell = make_cell("gru")
  with pytest.raises(ValueError, match="W_h"):
    parallel_scan.run(cell, cell.weights(), jnp.zeros((2, B, F)), None, cell.initial_carry(B))


@pytest.mark.parametrize("name", MIN_CELLS)
def test_trains_through_the_trainer(name, tmp_path):
  """A few steps of the real trainer (diagnostics included, which must not expect W_h)."""
  from configs import default
  from rnn_research.training import train
  config = default.base("kalman")
  config.task.length, config.task.eval_size = 10, 8
  config.model.cell, config.model.hidden_size = name, 4
  t = config.train
  t.steps, t.batch_size, t.seed = 4, 4, 0
  t.eval_every = t.checkpoint_every = t.diagnostics_every = t.log_every = 2
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics and all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", MIN_CELLS)
def test_sequential_and_associative_engines_agree_in_the_model(name):
  """engine='scan' (sequential linear scan, `auto` on CPU) == 'associative': values and grads."""
  xs, mask, _ = model_data(F)
  outs = []
  for eng in ("associative", "scan"):
    model = build(name, engine=eng)
    ys = model(xs, mask)
    grads = nnx.grad(lambda m: jnp.sum(m(xs, mask) ** 2))(model)
    outs.append((ys, jax.tree.leaves(nnx.state(grads, nnx.Param))))
  np.testing.assert_allclose(outs[0][0], outs[1][0], **TOL)
  for a, b in zip(outs[0][1], outs[1][1]):
    np.testing.assert_allclose(a, b, **GRAD_TOL)


def test_auto_picks_the_associative_scan_on_accelerators_only():
  assert engine.strategy("auto", backend="gpu").associative
  assert not engine.strategy("auto", backend="cpu").associative


def test_associative_engine_needs_a_cell_without_w_h():
  with pytest.raises(ValueError, match="engine='associative' runs linear-recurrence cells"):
    models.build(dict(cell="gru", engine="associative"), in_features=F, out_features=O,
                 rngs=nnx.Rngs(0))
