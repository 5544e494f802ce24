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
mse on the same held-out sequences) and `mse_over_kalman` (1.0 is optimal). References, on the
same sequences: `fixed_gain_mse` and `fixed_gain_over_kalman`, the steady-state filter (every
step uses the limit K_inf of the gains, which a linear RNN can represent; 1.011 by default),
and `rts_mse` and `rts_over_kalman`, the Rauch-Tung-Striebel smoother E[x_t | y_1..y_T], which
sees the future: a lower bound no filter reaches (0.618 by default). `mse_over_kalman_start`
and `mse_over_kalman_steady` are the ratio over the steps t < `startup_steps` (where the
gain still changes) and over the rest.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from rnn_research.tasks import batching, losses
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


def measurement_update(c: np.ndarray, r: np.ndarray,
                       p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Gain K = P C^T S^{-1}, S = C P C^T + R [n, m], and posterior (I - K C) P [n, n] of a
  prior covariance p [n, n]."""
  k = np.linalg.solve(c @ p @ c.T + r, c @ p).T          # S, P symmetric
  post = (np.eye(len(p)) - k @ c) @ p
  return k, (post + post.T) / 2


def riccati(a: np.ndarray, c: np.ndarray, q: np.ndarray, r: np.ndarray, p1: np.ndarray,
            length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The filter's covariance recursion from the prior N(0, p1) on x_1 (the same for every
  sequence): gains K_t [T, n, m], posteriors P_{t|t} [T, n, n] and priors P_{t|t-1}
  [T, n, n], with P_{t+1|t} = A P_{t|t} A^T + Q."""
  gains, posts, priors, p = [], [], [], p1
  for _ in range(length):
    k, post = measurement_update(c, r, p)
    gains.append(k)
    posts.append(post)
    priors.append(p)
    p = a @ post @ a.T + q
  return np.stack(gains), np.stack(posts), np.stack(priors)


def steady_state_gain(a: np.ndarray, c: np.ndarray, q: np.ndarray, r: np.ndarray,
                      p1: np.ndarray, tol: float = 1e-13, max_steps: int = 100_000) -> np.ndarray:
  """The fixed point K_inf [n, m] of the gain, at the P solving the discrete algebraic Riccati
  equation P = A (P - P C^T (C P C^T + R)^{-1} C P) A^T + Q, reached by iterating the
  recursion from p1 until P changes by at most tol (relative, max norm)."""
  p = p1
  for _ in range(max_steps):
    _, post = measurement_update(c, r, p)
    p, previous = a @ post @ a.T + q, p
    if np.abs(p - previous).max() <= tol * np.abs(previous).max():
      return measurement_update(c, r, p)[0]
  raise ValueError(f"the Riccati recursion did not converge in {max_steps} steps")


def filter_with_gains(a: np.ndarray, c: np.ndarray, gains: np.ndarray,
                      obs: np.ndarray) -> np.ndarray:
  """Means [B, T, n] (float64) of the filter with gains [T, n, m] started from the prior mean
  0: x_hat_t = x_pred_t + K_t (y_t - C x_pred_t), x_pred_{t+1} = A x_hat_t."""
  obs = np.asarray(obs, np.float64)
  mean = np.zeros((obs.shape[0], len(a)))                # prior mean of x_1
  out = np.empty(obs.shape[:2] + (len(a),))
  for t in range(obs.shape[1]):
    if t:
      mean = mean @ a.T
    mean = mean + (obs[:, t] - mean @ c.T) @ gains[t].T
    out[:, t] = mean
  return out


def kalman_filter(a: np.ndarray, c: np.ndarray, q: np.ndarray, r: np.ndarray, p1: np.ndarray,
                  obs: np.ndarray) -> np.ndarray:
  """Posterior means x_hat_{t|t} [B, T, n] (float64) of observations obs [B, T, m]."""
  return filter_with_gains(a, c, riccati(a, c, q, r, p1, obs.shape[1])[0], obs)


def fixed_gain_filter(a: np.ndarray, c: np.ndarray, q: np.ndarray, r: np.ndarray,
                      p1: np.ndarray, obs: np.ndarray) -> np.ndarray:
  """The steady-state filter's means [B, T, n] (float64): every step uses K_inf."""
  gain = steady_state_gain(a, c, q, r, p1)
  return filter_with_gains(a, c, np.broadcast_to(gain, (obs.shape[1],) + gain.shape), obs)


def rts_smoother(a: np.ndarray, c: np.ndarray, q: np.ndarray, r: np.ndarray, p1: np.ndarray,
                 obs: np.ndarray) -> np.ndarray:
  """Rauch-Tung-Striebel smoothed means E[x_t | y_1..y_T] [B, T, n] (float64), backwards
  from x_s_T = x_hat_{T|T}: x_s_t = x_hat_{t|t} + J_t (x_s_{t+1} - A x_hat_{t|t}),
  J_t = P_{t|t} A^T P_{t+1|t}^{-1}."""
  gains, posts, priors = riccati(a, c, q, r, p1, obs.shape[1])
  filtered = filter_with_gains(a, c, gains, obs)
  out = filtered.copy()
  for t in range(obs.shape[1] - 2, -1, -1):
    j = np.linalg.solve(priors[t + 1], a @ posts[t]).T    # P_{t|t} A^T P_{t+1|t}^{-1}
    out[:, t] += (out[:, t + 1] - filtered[:, t] @ a.T) @ j.T
  return out


def split_weights(weight: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
  """weight [B, T] split by time into (t < steps, t >= steps); the two sum to weight."""
  start = np.array(weight, np.float32)
  start[:, steps:] = 0.0
  return start, np.asarray(weight, np.float32) - start


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
      # With the default system the gain changes by < 0.2% after 10 steps (1e-5 after 20).
      "startup_steps": Key(10, "Steps t < startup_steps are the start-up, where the Kalman gain "
                               "still changes: `mse_over_kalman_start` scores them, "
                               "`mse_over_kalman_steady` the rest.", low=0),
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
    system, obs = (self.a, self.c, self.q, self.r, self.p1), self._eval["x"]
    self._references = {"fixed_gain": fixed_gain_filter(*system, obs).astype(np.float32),
                        "rts": rts_smoother(*system, obs).astype(np.float32)}

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
    """The model's mse against the Kalman filter's, the references' (`<ref>_mse`,
    `<ref>_over_kalman`) and the ratio over the start-up and the rest, each part left out
    where it has no weight (e.g. length <= startup_steps)."""
    m = self.compare(super().metrics(ys, data), "kalman", self._kalman, data)
    for name, est in self._references.items():
      m[f"{name}_mse"] = losses.weighted_mse(est, data["y"], data["weight"])
      m[f"{name}_over_kalman"] = m[f"{name}_mse"] / m["kalman_mse"]
    parts = split_weights(data["weight"], self.cfg.startup_steps)
    for part, weight in zip(("start", "steady"), parts):
      if weight.sum() > 0:
        m[f"mse_over_kalman_{part}"] = (losses.weighted_mse(ys, data["y"], weight)
                                        / losses.weighted_mse(self._kalman, data["y"], weight))
    return m
