"""The Linear Recurrent Unit (Orvieto et al. 2023): its defining properties and the stack's
contract.

The layer (`parallel_scan.run`, associative or sequential) must equal a plain `lax.scan` over
the streaming step in values and gradients with masks and resets; λ starts on the ring that
the spec asks for; γ keeps the state's variance at the input's for white noise; the model built
from a config streams, masks and resets as every cell does; bad combinations fail at build.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import engine, models, parallel_scan
from rnn_research.core.carry import Carry
from rnn_research.core.spec import resolve
from rnn_research.core.step import cell_step

import param_noise
from step_reference import model_data, sequential

B, T, F, H, N, O = 3, 13, 3, 4, 5, 2  # N != H: the carry [B, 2N] differs from the output
TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=2e-5, rtol=2e-5)


def make_cell(in_features: int = F, **overrides):
  spec = resolve({"cell": "lru", "hidden_size": H, "lru_state_size": N, **overrides})
  return models.build_cells(spec, in_features, nnx.Rngs(0))[0]


def eigenvalues(p) -> jax.Array:
  """λ [N] from the cell's parameters."""
  return jnp.exp(jax.lax.complex(-jnp.exp(p["pw"]["nu"]), jnp.exp(p["pw"]["theta"])))


def random_setup(cell, seed: int):
  """Weights moved off their init (|λ| kept in (0.5, 1)), xs [T, B, F], a mask of valid
  prefixes (one full, one empty), resets, init and carry0 (h [B, 2N])."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(cell.weights())
  p = jax.tree.unflatten(treedef, [a + 0.3 * rng.normal(size=a.shape).astype(np.float32)
                                   for a in leaves])
  p["pw"]["nu"] = jnp.asarray(np.log(-np.log(rng.uniform(0.5, 0.99, size=N))), jnp.float32)
  xs = jnp.asarray(rng.normal(size=(T, B, F)), jnp.float32)
  lengths = np.concatenate([[T, 0], rng.integers(1, T, size=B - 2)])
  mask = jnp.asarray(np.arange(T)[:, None] < lengths[None, :])
  resets = jnp.asarray(rng.random(size=(T, B)) < 0.2)
  init, carry0 = (Carry(jnp.asarray(rng.normal(size=(B, 2 * N)), jnp.float32)) for _ in "ab")
  return p, xs, mask, resets, init, carry0


def scan_layer(associative: bool):
  def run(cell, p, xs, mask, carry0, resets=None, init=None):
    return parallel_scan.run(cell, p, xs, mask, carry0, resets=resets, init=init,
                             associative=associative)
  return run


def values_and_grads(fn, cell, p, xs, mask, carry0, resets, init, seed=0):
  """(ys, final h), and d/d(p, xs, carry0, init) of a random projection of both."""
  rng = np.random.default_rng(seed)
  cot_y = jnp.asarray(rng.normal(size=(T, B, H)), jnp.float32)
  cot_h = jnp.asarray(rng.normal(size=(B, 2 * N)), jnp.float32)

  def loss(p, xs, carry0, init):
    ys, final = fn(cell, p, xs, mask, carry0, resets, init)
    return jnp.sum(ys * cot_y) + jnp.sum(final.h * cot_h), (ys, final.h)

  grads, out = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(p, xs, carry0, init)
  return out, grads


@pytest.mark.parametrize("case", ["plain", "mask", "resets", "mask_resets", "resets_zero_init"])
@pytest.mark.parametrize("associative", [True, False], ids=["associative", "sequential"])
def test_scan_equals_the_streaming_step(associative, case):
  """Both scan paths == lax.scan over `cell_step`: values to 1e-5, gradients w.r.t. every
  weight (ν, θ, γ included), the inputs, carry0 and init finite and equal, T = 13."""
  cell = make_cell()
  p, xs, mask, resets, init, carry0 = random_setup(cell, len(case))
  mask = mask if "mask" in case else None
  resets = resets if "resets" in case else None
  init = None if case == "resets_zero_init" else init
  args = (cell, p, xs, mask, carry0, resets, init)
  (ys, final), grads = values_and_grads(scan_layer(associative), *args)
  (ys_ref, final_ref), grads_ref = values_and_grads(sequential, *args)
  assert ys.shape == (T, B, H) and final.shape == (B, 2 * N)
  assert float(jnp.abs(ys_ref).max()) > 1e-2
  np.testing.assert_allclose(ys, ys_ref, **TOL)
  np.testing.assert_allclose(final, final_ref, **TOL)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    assert bool(jnp.all(jnp.isfinite(got)))
    np.testing.assert_allclose(got, want, **GRAD_TOL)
  for name in ("nu", "theta", "gamma_log", "w_c", "w_glu"):
    assert float(jnp.abs(grads[0]["pw"][name]).max()) > 1e-4, name
  if mask is not None:
    np.testing.assert_array_equal(np.asarray(ys)[~np.asarray(mask)], 0.0)


def test_associative_and_sequential_gradients_agree_through_the_engine():
  """engine='associative' vs 'scan' (the sequential linear scan, `auto` on CPU), with remat."""
  cell = make_cell()
  p, xs, mask, resets, init, carry0 = random_setup(cell, 3)
  outs = []
  for name, remat in (("associative", False), ("scan", True), ("auto", False)):
    how = engine.strategy(name, remat)

    def loss(p, how=how):
      ys, final, _ = engine.run_layer(cell, p, xs, mask, carry0, how, resets=resets, init=init)
      return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h ** 2)

    outs.append(jax.jit(jax.value_and_grad(loss))(p))
  for value, grads in outs[1:]:
    np.testing.assert_allclose(value, outs[0][0], **TOL)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(outs[0][1])):
      np.testing.assert_allclose(a, b, **GRAD_TOL)


def test_step_matches_the_paper_equations():
  """One step in complex numpy: s = λ s + γ (B x + b_B), y = Re(C s) + D x + b_D, out =
  GLU(GELU(y)), with λ = exp(-exp(ν) + i exp(θ))."""
  cell = make_cell()
  p, xs, _, _, _, carry0 = random_setup(cell, 6)
  q = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  pw, x, h = q["pw"], np.asarray(xs[0], np.float64), np.asarray(carry0.h, np.float64)
  lam = np.exp(-np.exp(pw["nu"]) + 1j * np.exp(pw["theta"]))
  z = x @ q["w_x"] + q["b"]
  drive = np.exp(pw["gamma_log"]) * (z[:, :N] + 1j * z[:, N:2 * N])
  s = lam * (h[:, :N] + 1j * h[:, N:]) + drive
  c = pw["w_c"][:N].T - 1j * pw["w_c"][N:].T                                  # C [H, N]
  y = (s @ c.T).real + z[:, 2 * N:]
  u = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))  # GELU (tanh)
  g = u @ pw["w_glu"] + pw["b_glu"]
  want = g[:, :H] / (1 + np.exp(-g[:, H:]))
  new, out, _ = cell_step(cell, p, carry0, xs[0], None)
  np.testing.assert_allclose(new.h, np.concatenate([s.real, s.imag], axis=1), **TOL)
  np.testing.assert_allclose(out, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("r_min,r_max,max_phase", [(0.9, 0.999, 2 * math.pi),
                                                   (0.0, 0.5, math.pi / 10)])
def test_ring_initialisation(r_min, r_max, max_phase):
  """At init |λ| lies in [r_min, r_max] with |λ|² uniform on [r_min², r_max²] (λ uniform on
  the ring's area), arg λ uniform on [0, max_phase], and γ = sqrt(1 - |λ|²)."""
  cell = make_cell(lru_state_size=4096, lru_r_min=r_min, lru_r_max=r_max,
                   lru_max_phase=max_phase)
  p = cell.weights()
  lam = eigenvalues(p)
  mod, phase = np.asarray(jnp.abs(lam), np.float64), np.exp(np.asarray(p["pw"]["theta"]))
  assert mod.min() >= r_min - 1e-6 and mod.max() <= r_max + 1e-6
  assert phase.min() >= 0.0 and phase.max() <= max_phase * (1 + 1e-6)

  def ks(sample, lo, hi):  # Kolmogorov-Smirnov distance to uniform on [lo, hi]
    u = np.sort((sample - lo) / (hi - lo))
    return np.max(np.abs(u - (np.arange(u.size) + 0.5) / u.size))

  assert ks(mod ** 2, r_min ** 2, r_max ** 2) < 0.03  # |λ| itself is not uniform:
  assert ks(mod, r_min, r_max) > 0.03 or r_min > 0.5  # with r_min = 0 its CDF is r²
  assert ks(phase, 0.0, max_phase) < 0.03
  np.testing.assert_allclose(np.exp(p["pw"]["gamma_log"]), np.sqrt(1 - mod ** 2), rtol=1e-4)


def test_gamma_keeps_the_state_variance_at_the_input_variance():
  """White-noise x: at init every mode's stationary E|s_j|² equals E|(B x)_j|² (γ² / (1 - |λ|²)
  = 1), where without γ it would be 1 / (1 - |λ|²) >= 4 on this ring."""
  n, rows, steps, f = 32, 1024, 200, 8
  cell = make_cell(in_features=f, lru_state_size=n, lru_r_min=0.85, lru_r_max=0.95)
  p = cell.weights()
  xs = jax.random.normal(jax.random.key(0), (steps, rows, f))
  _, final = jax.jit(lambda p: parallel_scan.run(cell, p, xs, None, cell.initial_carry(rows),
                                                 associative=False))(p)
  state_var = np.mean(np.asarray(final.h[:, :n]) ** 2 + np.asarray(final.h[:, n:]) ** 2, 0)
  drive_var = np.sum(np.asarray(p["w_x"][:, :2 * n]).reshape(f, 2, n) ** 2, axis=(0, 1))
  ratio = state_var / drive_var
  assert abs(ratio.mean() - 1) < 0.05 and np.all(np.abs(ratio - 1) < 0.2), ratio
  assert np.all(1 / (1 - np.abs(np.asarray(eigenvalues(p))) ** 2) > 3.5)


def test_state_size_and_no_recurrent_matrix():
  """N = lru_state_size (0: N = H); the carry is [Re s, Im s], 2N wide; no W_h."""
  cell = make_cell()
  assert cell.recurrent is False and "w_h" not in cell.weights()
  assert cell.w_x[...].shape == (F, 2 * N + H) and cell.initial_carry(B).h.shape == (B, 2 * N)
  assert make_cell(lru_state_size=0).initial_carry(B).h.shape == (B, 2 * H)


# --- the model built from a config ---------------------------------------------------------


def build(**overrides):
  cfg = dict(cell="lru", hidden_size=H, lru_state_size=N, num_layers=2, engine="associative",
             lru_r_min=0.5, lru_r_max=0.95)
  model = models.build({**cfg, **overrides}, in_features=F, out_features=O, rngs=nnx.Rngs(0))
  return param_noise.perturb(model, 0.1)


def stream(model, xs, mask, resets=None):
  state, outs = model.initial_state(xs.shape[0]), []
  for t in range(xs.shape[1]):
    state, y = model.step(state, xs[:, t], mask[:, t], None if resets is None else resets[:, t])
    outs.append(y)
  return jnp.stack(outs, axis=1), state


def assert_trees_close(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(u, v, **TOL)


@pytest.mark.parametrize("overrides", [{}, dict(norm="layer", vertical_skip="residual"),
                                       dict(learned_initial_state=True, engine="scan")],
                         ids=["plain", "paper_block", "learned_init_sequential"])
def test_model_streaming_equals_full_and_masking(overrides):
  """num_layers=2: streaming `model.step` == the full call (outputs and final state) ==
  time_major; padded values change no valid output nor the final (frozen) carry; y = 0 there."""
  model, twin = build(**overrides), build(execution="time_major", **overrides)
  model.eval()
  twin.eval()
  xs, mask, pad = model_data(F)
  ys, final = model(xs, mask, return_state=True)
  assert ys.shape == (B, 8, O) and float(jnp.abs(ys).max()) > 1e-2
  for got in (stream(model, xs, mask), twin(xs, mask, return_state=True)):
    np.testing.assert_allclose(got[0], ys, **TOL)
    assert_trees_close(got[1], final)
  ys_pad, final_pad = model(jnp.where(mask[..., None], xs, pad), mask, return_state=True)
  np.testing.assert_allclose(ys_pad, ys, **TOL)
  assert_trees_close(final_pad, final)
  np.testing.assert_array_equal(np.asarray(ys)[~np.asarray(mask)], 0.0)
  _, final_short = model(xs[1:2, :3], return_state=True)  # row 1 is 3 steps long
  assert_trees_close([c.h[1:2] for c in final], [c.h for c in final_short])


def test_model_resets_restart_the_carry():
  """A reset at t0 makes a row's outputs from t0 on those of a fresh call on xs[:, t0:],
  in the full call and in streaming."""
  model = build(learned_initial_state=True)
  xs, mask, _ = model_data(F)
  mask = jnp.ones_like(mask)
  resets = jnp.zeros(mask.shape, bool).at[0, 4].set(True).at[2, 6].set(True)
  ys = model(xs, mask, resets=resets)
  np.testing.assert_allclose(stream(model, xs, mask, resets)[0], ys, **TOL)
  np.testing.assert_allclose(ys[0, 4:], model(xs[:1, 4:])[0], **TOL)
  np.testing.assert_allclose(ys[2, 6:], model(xs[2:, 6:])[0], **TOL)
  np.testing.assert_allclose(ys[1], model(xs[1:2])[0], **TOL)  # no reset: untouched


def test_model_gradients_are_finite_and_causal():
  """Every parameter gets a finite non-zero gradient, padded inputs none; y_{<t} ignores x_t."""
  model = build()
  xs, mask, _ = model_data(F)
  ys = model(xs)
  ys2 = model(xs.at[:, 3].add(3.0))
  np.testing.assert_array_equal(ys2[:, :3], ys[:, :3])
  assert float(jnp.abs(ys2[:, 3] - ys[:, 3]).min()) > 0
  grads, d_xs = nnx.grad(lambda m, xs: jnp.sum(m(xs, mask) ** 2), argnums=(0, 1))(model, xs)
  for path, g in jax.tree_util.tree_flatten_with_path(nnx.state(grads, nnx.Param))[0]:
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0, path
  assert float(jnp.abs(jnp.where(mask[..., None], 0.0, d_xs)).max()) == 0.0


# --- bad configurations ----------------------------------------------------------------------


@pytest.mark.parametrize("overrides,match", [
    (dict(horizontal_skip="residual"), "horizontal_skip='residual' cannot combine"),
    (dict(horizontal_skip="learned"), "horizontal_skip='learned' cannot combine"),
    (dict(norm="mini_vertical"), "norm='mini_vertical' cannot combine"),
    (dict(norm="vertical"), "norm='vertical' cannot combine"),
    (dict(recurrent_dropout=0.1), "recurrent_dropout=0.1 cannot combine"),
    (dict(norm="batch_per_step"), "norm='batch_per_step' .* has no W_h"),
    (dict(norm="layer_per_step"), "norm='layer_per_step' .* has no W_h"),
    (dict(transition="mlp"), "transition='mlp' is defined for cell='rnn' only"),
    (dict(lru_state_size=-1), "lru_state_size must be 0"),
    (dict(lru_r_min=0.9, lru_r_max=0.9), "0 <= lru_r_min < lru_r_max < 1"),
    (dict(lru_r_max=1.0), "0 <= lru_r_min < lru_r_max < 1"),
    (dict(lru_r_min=-0.1), "0 <= lru_r_min < lru_r_max < 1"),
    (dict(lru_max_phase=0.0), "lru_max_phase must be positive"),
])
def test_bad_configs_fail_at_build(overrides, match):
  """The spec alone refuses (no model is built); each message names the key."""
  with pytest.raises(ValueError, match=match):
    resolve(dict(cell="lru", hidden_size=H, num_layers=2, **overrides))


@pytest.mark.slow  # ~10 s: the whole trainer
def test_trains_through_the_trainer(tmp_path):
  """A few steps of the real trainer, diagnostics included (gradient-flow probes of width H on
  a carry 2N wide, no W_h)."""
  from configs import default
  from rnn_research.training import train
  config = default.base("kalman")
  config.task.length, config.task.eval_size = 10, 8
  config.model.cell, config.model.hidden_size, config.model.lru_state_size = "lru", 4, 3
  t = config.train
  t.steps, t.batch_size, t.seed = 4, 4, 0
  t.eval_every = t.checkpoint_every = t.diagnostics_every = t.log_every = 2
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics and all(np.isfinite(v) for v in metrics.values())


def test_gradient_flow_probes_act_on_the_layer_output():
  """probes [L, B, T, H] add to each layer's out_t: layer 0's probe at t reaches the loss at
  steps >= t through layer 1's state, and never before."""
  model = build()
  model.eval()
  xs, mask, _ = model_data(F)
  probes = jnp.zeros((2, B, 8, H))

  def loss(probes, t_loss):
    return jnp.sum(model(xs, probes=probes)[:, t_loss] ** 2)

  d = jax.grad(loss)(probes, 5)
  assert bool(jnp.all(jnp.isfinite(d))) and float(jnp.abs(d[0, :, :6]).min()) > 0
  np.testing.assert_array_equal(d[:, :, 6:], 0.0)
