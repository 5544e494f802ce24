"""`kalman`: filtering a linear-Gaussian state space, where the Kalman filter is optimal.

The lecture's RNN is a learned Kalman filter (section 1.1: "RNNs are inspired by Kalman
filters to learn the values of the hidden states"), and filtering is its first problem class
(section 5): read y_1..y_t, output an estimate of the hidden state x_t, never looking ahead.

Model (state dim n, observation dim m):

  x_1 ~ N(0, P_inf),   x_{t+1} = A x_t + w_t,  w_t ~ N(0, q I)
                       y_t     = C x_t + v_t,  v_t ~ N(0, r I)

A is block diagonal with 2x2 blocks radius * R(phi_k) (a rotation by phi_k ~ U(0, pi) scaled
to |eigenvalue| = radius; a 1x1 block `radius` if n is odd); C ~ N(0, 1/n) entrywise, so C x
has about the variance of one state coordinate. P_inf solves P = A P A^T + q I: x_1 is drawn
from the stationary distribution, so the process is stationary. A and C are fixed by
`system_seed`; training sequences by the trainer's (seed, step); the held-out set by
`eval_seed`.

Inputs are the observations y_t, targets the hidden states x_t. The optimum under MSE is the
posterior mean x_hat_{t|t} = E[x_t | y_1..y_t], computed exactly by the Kalman filter
(`kalman_filter`, float64; its covariance recursion and gains are the same for every sequence).

Metrics: `mse` (mean over valid positions and state coordinates), `kalman_mse` (the filter's
mse on the same held-out sequences) and `mse_over_kalman` (1.0 is optimal; a fixed-gain,
steady-state filter, which a linear RNN can represent, is about 1.01).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from rnn_research.tasks import batching
from rnn_research.tasks.base import TASKS, Batch, Key, RegressionTask


def rotation_dynamics(n: int, radius: float, rng: np.random.Generator) -> np.ndarray:
  """Block-diagonal A [n, n]: scaled 2x2 rotations by U(0, pi) angles, every |eig| = radius."""
  a = np.zeros((n, n))
  for k in range(0, n - 1, 2):
    phi = rng.uniform(0.0, np.pi)
    a[k:k + 2, k:k + 2] = radius * np.array([[np.cos(phi), -np.sin(phi)],
                                             [np.sin(phi), np.cos(phi)]])
  if n % 2:
    a[n - 1, n - 1] = radius
  return a


def stationary_covariance(a: np.ndarray, q: np.ndarray) -> np.ndarray:
  """P solving the discrete Lyapunov equation P = A P A^T + Q (needs spectral radius < 1)."""
  n = len(a)
  vec = np.linalg.solve(np.eye(n * n) - np.kron(a, a), q.reshape(-1))
  p = vec.reshape(n, n)
  return (p + p.T) / 2


def kalman_gains(a: np.ndarray, c: np.ndarray, q: np.ndarray, r: np.ndarray, p1: np.ndarray,
                 length: int) -> np.ndarray:
  """Gains K_t [T, n, m] of the filter started from the prior N(0, p1) on x_1."""
  n = len(a)
  gains, p = [], p1
  for _ in range(length):
    s = c @ p @ c.T + r
    k = np.linalg.solve(s, c @ p).T                       # P C^T S^{-1} (S, P symmetric)
    gains.append(k)
    p_post = (np.eye(n) - k @ c) @ p
    p = a @ ((p_post + p_post.T) / 2) @ a.T + q
  return np.stack(gains)


def kalman_filter(a: np.ndarray, c: np.ndarray, q: np.ndarray, r: np.ndarray, p1: np.ndarray,
                  obs: np.ndarray) -> np.ndarray:
  """Posterior means x_hat_{t|t} [B, T, n] (float64) of observations obs [B, T, m]."""
  obs = np.asarray(obs, np.float64)
  gains = kalman_gains(a, c, q, r, p1, obs.shape[1])
  mean = np.zeros((obs.shape[0], len(a)))                # prior mean of x_1
  out = np.empty(obs.shape[:2] + (len(a),))
  for t in range(obs.shape[1]):
    if t:
      mean = mean @ a.T
    mean = mean + (obs[:, t] - mean @ c.T) @ gains[t].T
    out[:, t] = mean
  return out


@TASKS.register("kalman")
class Kalman(RegressionTask):
  """Estimate the hidden state of a linear-Gaussian system from its noisy observations."""
  main_metric = ("eval/mse_over_kalman", "min")

  name = "kalman"
  held_out = 512
  config_keys = {
      "state_dim": Key(4, "Dimension n of the hidden state x_t (the targets).", low=1),
      "obs_dim": Key(2, "Dimension m of the observations y_t (the inputs).", low=1),
      "length": Key(100, "Sequence length T.", low=1),
      "radius": Key(0.95, "|eigenvalue| of every block of A (< 1: stable).", low=0.0,
                    high=0.999),
      "q": Key(0.1, "Process noise variance: Q = q I.", low=0.0, low_open=True),
      "r": Key(0.5, "Observation noise variance: R = r I.", low=0.0, low_open=True),
      "system_seed": Key(0, "Seed of the fixed system (rotation angles of A, the matrix C).",
                         low=0),
  }

  def setup(self) -> None:
    c = self.cfg
    rng = batching.system_rng(c.system_seed)
    n, m = c.state_dim, c.obs_dim
    self.a = rotation_dynamics(n, c.radius, rng)
    self.c = rng.standard_normal((m, n)) / np.sqrt(n)
    self.q = c.q * np.eye(n)
    self.r = c.r * np.eye(m)
    self.p1 = stationary_covariance(self.a, self.q)
    self.in_features, self.out_features = m, n
    self._set_generated_eval()
    self._kalman = self.filter(self._eval["x"])

  def simulate(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of states [n, T, state_dim] and observations [n, T, obs_dim] (float64)."""
    c = self.cfg
    w = rng.standard_normal((n, c.length, c.state_dim))
    v = rng.standard_normal((n, c.length, c.obs_dim)) * np.sqrt(c.r)
    states = np.empty_like(w)
    states[:, 0] = w[:, 0] @ np.linalg.cholesky(self.p1).T
    for t in range(1, c.length):
      states[:, t] = states[:, t - 1] @ self.a.T + np.sqrt(c.q) * w[:, t]
    return states, states @ self.c.T + v

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    states, obs = self.simulate(rng, n)
    return batching.make_batch(obs, states)

  def filter(self, obs: np.ndarray) -> np.ndarray:
    """The Kalman filter's x_hat_{t|t} [B, T, state_dim] (float32) for observations [B, T, m]."""
    return kalman_filter(self.a, self.c, self.q, self.r, self.p1, obs).astype(np.float32)

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    return self.compare(super().metrics(ys, data), "kalman", self._kalman, data)
