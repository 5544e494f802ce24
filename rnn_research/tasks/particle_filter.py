"""A bootstrap particle filter in numpy, vectorised over (sequences, particles).

For a state-space model x_1 ~ p(x_1), x_t ~ p(x_t | x_{t-1}), y_t = h(x_t) + v_t with
v_t ~ N(0, sigma^2 I), each sequence carries N particles x^i_t and log-weights l^i_t:

  propagate  x^i_1 ~ p(x_1);  x^i_t ~ p(x_t | x^i_{t-1})                  (the proposal)
  weight     l^i_t = l^i_{t-1} - |y_t - h(x^i_t)|^2 / (2 sigma^2),  w_t = softmax(l_t)
  estimate   E[f(x_t) | y_1..y_t] ~ sum_i w^i_t f(x^i_t)
  resample   where ESS = 1 / sum_i (w^i_t)^2 < ess_fraction N: systematic resampling, l = 0

The estimate converges to the posterior mean of f(x_t), the MSE-optimal estimate of f(x_t),
as N grows (Monte Carlo error O(1 / sqrt(ESS))).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# Particles are [d, B, N] (component first: each is a contiguous [B, N] array).
Init = Callable[[np.random.Generator, int, int], np.ndarray]        # (rng, B, N) -> [d, B, N]
Transition = Callable[[np.random.Generator, np.ndarray], np.ndarray]  # [d, B, N] -> [d, B, N]
# [d, B, N] -> (h(x) [m, B, N], f(x) [k, B, N])
Measure = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def systematic_resample(rng: np.random.Generator, w: np.ndarray) -> np.ndarray:
  """Indices [B, N] drawn per row of weights w [B, N] (rows sum to 1) by systematic
  resampling: particle i is picked once for each (u_b + j) / N, j = 0..N-1, in its interval
  [cdf_{i-1}, cdf_i), with one u_b ~ U(0, 1) per row."""
  b, n = w.shape
  cdf = np.cumsum(w, 1)
  cdf /= cdf[:, -1:]
  offset = np.arange(b)[:, None]                         # rows end to end: one sorted search
  points = (rng.uniform(size=(b, 1)) + np.arange(n)) / n + offset
  idx = np.searchsorted((cdf + offset).ravel(), points.ravel(), side="right")
  return np.clip(idx.reshape(b, n) - offset * n, 0, n - 1)


def bootstrap_filter(obs: np.ndarray, init: Init, transition: Transition, measure: Measure,
                     obs_std: float, num_particles: int, rng: np.random.Generator,
                     ess_fraction: float = 0.5) -> np.ndarray:
  """Estimates sum_i w^i_t f(x^i_t) [B, T, k] (float64) of observations obs [B, T, m];
  measure(x) gives h(x) and f(x) of the module docstring (one call, shared work)."""
  obs = np.asarray(obs, np.float64)
  b, length, _ = obs.shape
  rows = np.arange(b)[:, None]
  particles = init(rng, b, num_particles)
  logw = np.zeros((b, num_particles))
  obs = obs.transpose(1, 2, 0)[..., None]                # [T, m, B, 1]
  out = []
  for t in range(length):
    if t:
      particles = transition(rng, particles)
    h, f = measure(particles)
    logw = logw - 0.5 * np.sum((obs[t] - h)**2, 0) / obs_std**2
    logw -= logw.max(1, keepdims=True)
    w = np.exp(logw)
    w /= w.sum(1, keepdims=True)
    out.append(np.einsum("bn,kbn->bk", w, f))
    low = np.flatnonzero(1.0 / np.sum(w**2, 1) < ess_fraction * num_particles)
    if len(low):
      idx = systematic_resample(rng, w[low])
      particles[:, low] = particles[:, rows[low], idx]
      logw[low] = 0.0
  return np.stack(out, 1)
