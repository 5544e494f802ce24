"""The Kalman filter and RTS smoother against exact Gaussian conditioning, the steady-state
filter, the per-time split of the task's optimality ratio, and a particle filter against the
exact filter."""
from __future__ import annotations

import numpy as np
import pytest

from rnn_research.tasks import kalman, losses
from rnn_research.tasks.particle_filter import bootstrap_filter

SMALL = dict(name="kalman", length=6, eval_size=40)


def _joint_posterior_means(a, c, q, r, p1, obs, smooth=False):
  """E[x_t | y_1..y_t] (with smooth: E[x_t | y_1..y_T]) for one sequence obs [T, m] by
  conditioning the joint Gaussian of (x_1..x_T, y_1..y_T), built from the model's
  covariances, independent of the filter."""
  n, m, length = len(a), len(c), len(obs)
  var = [p1]
  for _ in range(length - 1):
    var.append(a @ var[-1] @ a.T + q)                      # Var(x_t)
  cov_x = np.zeros((length * n, length * n))
  for s in range(length):
    for t in range(s, length):                             # Cov(x_t, x_s) = A^{t-s} Var(x_s)
      block = np.linalg.matrix_power(a, t - s) @ var[s]
      cov_x[t * n:(t + 1) * n, s * n:(s + 1) * n] = block
      cov_x[s * n:(s + 1) * n, t * n:(t + 1) * n] = block.T
  big_c = np.kron(np.eye(length), c)
  cov_xy = cov_x @ big_c.T
  cov_y = big_c @ cov_x @ big_c.T + np.kron(np.eye(length), r)
  out = np.empty((length, n))
  for t in range(length):
    k = length * m if smooth else (t + 1) * m
    gain = np.linalg.solve(cov_y[:k, :k], cov_xy[t * n:(t + 1) * n, :k].T).T
    out[t] = gain @ obs.reshape(-1)[:k]
  return out


def test_filter_equals_gaussian_conditioning():
  task = kalman.Kalman(SMALL, 4, 0)
  states, obs = task.simulate(np.random.default_rng(3), 3)
  filtered = kalman.kalman_filter(task.a, task.c, task.q, task.r, task.p1, obs)
  assert filtered.dtype == np.float64
  for i in range(3):
    exact = _joint_posterior_means(task.a, task.c, task.q, task.r, task.p1, obs[i])
    np.testing.assert_allclose(filtered[i], exact, atol=1e-6)


def test_rts_smoother_equals_gaussian_conditioning_on_every_observation():
  task = kalman.Kalman(SMALL, 4, 0)
  _, obs = task.simulate(np.random.default_rng(4), 3)
  smoothed = kalman.rts_smoother(task.a, task.c, task.q, task.r, task.p1, obs)
  for i in range(3):
    exact = _joint_posterior_means(task.a, task.c, task.q, task.r, task.p1, obs[i], smooth=True)
    np.testing.assert_allclose(smoothed[i], exact, atol=1e-6)


def test_system_has_the_documented_structure():
  task = kalman.Kalman({"name": "kalman", "state_dim": 5}, 4, 0)
  np.testing.assert_allclose(np.abs(np.linalg.eigvals(task.a)), 0.95, atol=1e-12)
  np.testing.assert_allclose(task.p1, task.a @ task.p1 @ task.a.T + task.q, atol=1e-10)
  other = kalman.Kalman({"name": "kalman", "state_dim": 5, "system_seed": 1}, 4, 0)
  assert not np.allclose(task.a, other.a)
  same = kalman.Kalman({"name": "kalman", "state_dim": 5}, 4, 7)
  np.testing.assert_array_equal(task.c, same.c)             # trainer seed leaves the system


def test_kalman_predictor_is_the_baseline_and_zeros_are_worse():
  task = kalman.Kalman(SMALL, 16, 0)
  own = task.evaluate(lambda b: task.filter(b["x"]))
  assert own["mse_over_kalman"] == pytest.approx(1.0, abs=1e-6)
  assert own["mse"] == pytest.approx(own["kalman_mse"], rel=1e-6)
  zeros = task.evaluate(lambda b: np.zeros(b["x"].shape[:2] + (4,)))
  assert zeros["mse_over_kalman"] > 1.2
  # Feeding the truth is better than the filter.
  truth = task.evaluate(lambda b: b["y"])
  assert truth["mse"] == 0.0 and truth["mse_over_kalman"] == 0.0


def test_default_eval_set_is_512_stationary_sequences():
  task = kalman.Kalman({}, 64, 0)
  assert task.eval_size == 512 and task.eval_batches()[0]["x"].shape == (64, 100, 2)
  # Stationary: the state variance is the same at the start and the end.
  y = task._eval["y"].astype(np.float64)
  np.testing.assert_allclose(y[:, 0].var(0), np.diag(task.p1), rtol=0.25)
  np.testing.assert_allclose(y[:, -1].var(0), np.diag(task.p1), rtol=0.25)


def test_references_are_ordered_on_the_held_out_set():
  """Smoother (sees the future) <= Kalman filter (optimal causal) <= fixed-gain filter."""
  m = kalman.Kalman({}, 64, 0).evaluate(lambda b: np.zeros(b["x"].shape[:2] + (4,)))
  assert m["rts_mse"] < m["kalman_mse"] < m["fixed_gain_mse"]
  assert m["rts_over_kalman"] == pytest.approx(m["rts_mse"] / m["kalman_mse"], rel=1e-6)
  assert m["fixed_gain_over_kalman"] == pytest.approx(m["fixed_gain_mse"] / m["kalman_mse"],
                                                      rel=1e-6)
  assert 1.0 < m["fixed_gain_over_kalman"] < 1.05 and m["rts_over_kalman"] < 0.9


def test_fixed_gain_is_the_riccati_limit_and_equals_kalman_once_converged():
  task = kalman.Kalman({"eval_size": 32}, 32, 0)
  system = (task.a, task.c, task.q, task.r, task.p1)
  gain = kalman.steady_state_gain(*system)
  gains = kalman.riccati(*system, 200)[0]
  np.testing.assert_allclose(gains[-1], gain, atol=1e-12)
  obs = task._eval["x"]
  exact, fixed = kalman.kalman_filter(*system, obs), kalman.fixed_gain_filter(*system, obs)
  gap = np.abs(exact - fixed).max((0, 2))                  # per step
  assert gap[0] > 1e-2                                     # the start-up differs ...
  assert gap[60:].max() < 1e-6 and gap[-1] < 1e-10         # ... then step by step the same


def test_time_split_weights_average_back_to_the_whole():
  task = kalman.Kalman({"eval_size": 64, "startup_steps": 7}, 64, 0)
  rng = np.random.default_rng(0)
  ys = task._kalman + rng.standard_normal(task._kalman.shape).astype(np.float32)
  data = dict(task._eval, weight=(rng.uniform(size=(64, 100)) < 0.8).astype(np.float32))
  start, steady = kalman.split_weights(data["weight"], 7)
  np.testing.assert_array_equal(start + steady, data["weight"])
  assert not start[:, 7:].any() and not steady[:, :7].any()
  mse = lambda est, w: float(losses.weighted_mse(est, data["y"], w))  # noqa: E731
  whole = (start.sum() * mse(ys, start) + steady.sum() * mse(ys, steady)) / data["weight"].sum()
  assert whole == pytest.approx(mse(ys, data["weight"]), rel=1e-5)
  # The ratio is the Kalman-error-weighted mean of the two parts' ratios.
  m = {k: float(v) for k, v in task.metrics(ys, data).items()}  # (approx reads no jax array)
  k_start, k_steady = start.sum() * mse(task._kalman, start), steady.sum() * mse(task._kalman,
                                                                             steady)
  mixed = ((k_start * m["mse_over_kalman_start"] + k_steady * m["mse_over_kalman_steady"])
           / (k_start + k_steady))
  assert mixed == pytest.approx(m["mse_over_kalman"], rel=1e-5)
  assert m["mse_over_kalman_start"] != pytest.approx(m["mse_over_kalman_steady"], rel=1e-3)


def test_a_part_without_steps_is_left_out():
  m = kalman.Kalman(dict(SMALL, startup_steps=10), 8, 0).evaluate(lambda b: np.zeros(
      b["x"].shape[:2] + (4,)))
  assert "mse_over_kalman_start" in m and "mse_over_kalman_steady" not in m
  m = kalman.Kalman(dict(SMALL, startup_steps=0), 8, 0).evaluate(lambda b: np.zeros(
      b["x"].shape[:2] + (4,)))
  assert m["mse_over_kalman_steady"] == pytest.approx(m["mse_over_kalman"], rel=1e-6)
  assert "mse_over_kalman_start" not in m


def _kalman_particle_filter(task, obs, num_particles, seed):
  """The generic bootstrap filter on the task's linear-Gaussian model (particles [n, B, N])."""
  chol = np.linalg.cholesky(task.p1)
  init = lambda rng, b, n: np.einsum(  # noqa: E731
      "ij,jbn->ibn", chol, rng.standard_normal((len(chol), b, n)))
  step = lambda rng, x: (np.einsum("ij,jbn->ibn", task.a, x)  # noqa: E731
                         + np.sqrt(task.cfg.q) * rng.standard_normal(x.shape))
  measure = lambda x: (np.einsum("ij,jbn->ibn", task.c, x), x)  # noqa: E731
  return bootstrap_filter(obs, init, step, measure, np.sqrt(task.cfg.r), num_particles,
                          np.random.default_rng(seed))


def test_particle_filter_agrees_with_the_exact_kalman_filter():
  task = kalman.Kalman(dict(length=30, eval_size=64), 64, 0)
  obs, states = task._eval["x"], task._eval["y"].astype(np.float64)
  exact = kalman.kalman_filter(task.a, task.c, task.q, task.r, task.p1, obs)
  pf = _kalman_particle_filter(task, obs, 2000, 0)
  kf_mse, pf_mse = ((exact - states) ** 2).mean(), ((pf - states) ** 2).mean()
  assert pf_mse == pytest.approx(kf_mse, rel=0.02)
  assert ((pf - exact) ** 2).mean() < 0.01 * kf_mse        # the estimates themselves agree
  few = _kalman_particle_filter(task, obs, 20, 0)           # ... and the agreement is earned
  assert ((few - exact) ** 2).mean() > 5 * ((pf - exact) ** 2).mean()
  np.testing.assert_array_equal(pf, _kalman_particle_filter(task, obs, 2000, 0))
