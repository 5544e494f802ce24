"""The Kalman filter against exact Gaussian conditioning, and the task's optimality ratio."""
from __future__ import annotations

import numpy as np
import pytest

from rnn_research.tasks import kalman

SMALL = dict(name="kalman", length=6, eval_size=40)


def _joint_posterior_means(a, c, q, r, p1, obs):
  """E[x_t | y_1..y_t] for one sequence obs [T, m] by conditioning the joint Gaussian of
  (x_1..x_T, y_1..y_T), built from the model's covariances, independent of the filter."""
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
    k = (t + 1) * m
    gain = np.linalg.solve(cov_y[:k, :k], cov_xy[t * n:(t + 1) * n, :k].T).T
    out[t] = gain @ obs[:t + 1].reshape(-1)
  return out


def test_filter_equals_gaussian_conditioning():
  task = kalman.Kalman(SMALL, 4, 0)
  states, obs = task.simulate(np.random.default_rng(3), 3)
  filtered = kalman.kalman_filter(task.a, task.c, task.q, task.r, task.p1, obs)
  assert filtered.dtype == np.float64
  for i in range(3):
    exact = _joint_posterior_means(task.a, task.c, task.q, task.r, task.p1, obs[i])
    np.testing.assert_allclose(filtered[i], exact, atol=1e-6)


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
