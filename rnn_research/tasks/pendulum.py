"""`pendulum`: filtering a nonlinear system, a damped pendulum driven by noise.

The nonlinear counterpart of `kalman` (lecture section 5, filtering; section 1.2: filters as
MLPs can represent nonlinear dynamics). With angle theta, angular velocity omega, step dt,
natural frequency w0, damping g and process noise s (semi-implicit Euler-Maruyama, stable
for oscillators where explicit Euler gains energy):

  omega_{t+1} = omega_t + dt (-w0^2 sin theta_t - g omega_t) + s sqrt(dt) xi_t
  theta_{t+1} = theta_t + dt omega_{t+1}
  y_t         = (sin theta_t, cos theta_t) + v_t,   v_t ~ N(0, obs_noise^2 I)

with theta_1 ~ U(-pi, pi), omega_1 ~ N(0, omega_init_std^2), xi_t ~ N(0, 1). Inputs are the
noisy points y_t on the circle, targets the state (sin theta_t, cos theta_t, omega_t).

Baseline: an extended Kalman filter (`ekf`) on the exact discrete model: linearise the step
and the observation at the current estimate; it starts from theta = atan2 of the first
observation (variance obs_noise^2), omega = 0 (variance omega_init_std^2), and outputs
(sin theta_hat, cos theta_hat, omega_hat). It is not optimal (the posterior is not Gaussian),
so a good RNN may beat it: `mse_over_ekf` < 1 is possible.

Reference: a bootstrap particle filter (`particle_filter`, `num_particles` particles) on the
same exact model, started from the true prior, whose estimate is the posterior mean of
(sin theta, cos theta, omega): near the optimum for these targets. It runs once per task, at
the first evaluation (8-12 s for the default held-out set on 2 shared CPU cores).

Metrics: `mse` (mean over valid positions and the 3 targets), `ekf_mse`, `mse_over_ekf`,
`pf_mse`, `mse_over_pf` (the model against the near-optimal reference) and `ekf_over_pf` (how
far the EKF is from it: 1.013 by default).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from rnn_research.tasks import batching
from rnn_research.tasks.base import TASKS, Batch, Key, RegressionTask
from rnn_research.tasks.particle_filter import bootstrap_filter

_PF_STREAM = 0x9F17  # the particle filter's random stream, apart from the held-out data's
_PF_DONE: dict[tuple, np.ndarray] = {}  # the particle filter's estimates per task config


def predict_mean(theta: np.ndarray, omega: np.ndarray, dt: float, w0: float, damping: float,
                 kick: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
  """One step of the model: omega' = (1 - dt g) omega - dt w0^2 sin theta + kick, theta' =
  theta + dt omega' (any equal shapes). kick = s sqrt(dt) xi is the simulator's (and the
  particle filter's) noise; without it, the noise-free step, the EKF's prediction of the mean."""
  omega = (1.0 - dt * damping) * omega - dt * w0**2 * np.sin(theta) + kick
  return theta + dt * omega, omega


def ekf(obs: np.ndarray, dt: float, w0: float, damping: float, noise: float, obs_noise: float,
        omega_init_std: float) -> np.ndarray:
  """EKF estimates (sin theta, cos theta, omega) [B, T, 3] of observations obs [B, T, 2]."""
  obs = np.asarray(obs, np.float64)
  b, length, _ = obs.shape
  decay = 1.0 - dt * damping
  theta = np.arctan2(obs[:, 0, 0], obs[:, 0, 1])
  omega = np.zeros(b)
  p = np.zeros((b, 2, 2))
  p[:, 0, 0], p[:, 1, 1] = obs_noise**2, omega_init_std**2
  qv = noise**2 * dt * np.array([[dt * dt, dt], [dt, 1.0]])      # noise enters via omega
  out = np.empty((b, length, 3))
  out[:, 0] = np.stack([np.sin(theta), np.cos(theta), omega], -1)
  for t in range(1, length):
    # Predict: the semi-implicit Euler step and its Jacobian F at the current estimate.
    k = dt * w0**2 * np.cos(theta)
    f = np.zeros((b, 2, 2))
    f[:, 0, 0], f[:, 0, 1] = 1.0 - dt * k, dt * decay
    f[:, 1, 0], f[:, 1, 1] = -k, decay
    theta, omega = predict_mean(theta, omega, dt, w0, damping)
    p = f @ p @ f.transpose(0, 2, 1) + qv
    # Update with y_t = (sin theta, cos theta) + v: H = [[cos, 0], [-sin, 0]].
    h = np.zeros((b, 2, 2))
    h[:, 0, 0], h[:, 1, 0] = np.cos(theta), -np.sin(theta)
    s = h @ p @ h.transpose(0, 2, 1) + obs_noise**2 * np.eye(2)
    gain = np.linalg.solve(s, h @ p).transpose(0, 2, 1)          # P H^T S^{-1}
    innov = obs[:, t] - np.stack([np.sin(theta), np.cos(theta)], -1)
    delta = np.einsum("bij,bj->bi", gain, innov)
    theta, omega = theta + delta[:, 0], omega + delta[:, 1]
    p = (np.eye(2) - gain @ h) @ p
    p = (p + p.transpose(0, 2, 1)) / 2
    out[:, t] = np.stack([np.sin(theta), np.cos(theta), omega], -1)
  return out


def particle_filter(obs: np.ndarray, dt: float, w0: float, damping: float, noise: float,
                    obs_noise: float, omega_init_std: float, num_particles: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Bootstrap particle filter (tasks/particle_filter.py) on the simulator's exact model:
  posterior means of (sin theta, cos theta, omega) [B, T, 3] of observations obs [B, T, 2]."""
  def init(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    return np.stack([rng.uniform(-np.pi, np.pi, (b, n)),
                     omega_init_std * rng.standard_normal((b, n))])

  def transition(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    kick = noise * np.sqrt(dt) * rng.standard_normal(x[0].shape)
    return np.stack(predict_mean(x[0], x[1], dt, w0, damping, kick))

  def measure(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.stack([np.sin(x[0]), np.cos(x[0]), x[1]])
    return f[:2], f                                         # y's mean, the targets

  return bootstrap_filter(obs, init, transition, measure, obs_noise, num_particles, rng)


@TASKS.register("pendulum")
class Pendulum(RegressionTask):
  """Track a noisy damped pendulum's (sin theta, cos theta, omega) from noisy circle points."""
  main_metric = ("eval/mse_over_ekf", "min")

  name = "pendulum"
  held_out = 512
  config_keys = {
      "length": Key(100, "Sequence length T.", low=2),
      "dt": Key(0.1, "Time step dt of the simulation and of the observations.", low=0.0,
                high=1.0, low_open=True),
      "natural_frequency": Key(2.0, "Natural frequency w0 (rad / time unit): period 2 pi / w0 "
                                    "for small swings.", low=0.0, low_open=True),
      "damping": Key(0.1, "Damping g of the angular velocity.", low=0.0),
      "process_noise": Key(1.0, "Process noise s: omega receives s sqrt(dt) N(0, 1) each step.",
                           low=0.0),
      "obs_noise": Key(0.3, "Standard deviation of the noise on each observed coordinate "
                            "(sin, cos).", low=0.0, low_open=True),
      "omega_init_std": Key(1.0, "Standard deviation of the initial angular velocity.", low=0.0,
                            low_open=True),
      "num_particles": Key(2000, "Particles of the bootstrap particle filter, the near-optimal "
                                 "reference (`pf_mse`), run on the held-out set.", low=1),
  }

  def setup(self) -> None:
    self.in_features, self.out_features = 2, 3
    self._set_generated_eval()
    self._ekf = self.filter(self._eval["x"])

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    c = self.cfg
    xi = rng.standard_normal((n, c.length)) * c.process_noise * np.sqrt(c.dt)
    theta = np.empty((n, c.length))
    omega = np.empty((n, c.length))
    theta[:, 0] = rng.uniform(-np.pi, np.pi, n)
    omega[:, 0] = rng.standard_normal(n) * c.omega_init_std
    for t in range(1, c.length):
      theta[:, t], omega[:, t] = predict_mean(theta[:, t - 1], omega[:, t - 1], c.dt,
                                              c.natural_frequency, c.damping, xi[:, t])
    circle = np.stack([np.sin(theta), np.cos(theta)], -1)
    obs = circle + c.obs_noise * rng.standard_normal(circle.shape)
    return batching.make_batch(obs, np.concatenate([circle, omega[..., None]], -1))

  def filter(self, obs: np.ndarray) -> np.ndarray:
    """The EKF baseline's estimates [B, T, 3] (float32) for observations [B, T, 2]."""
    c = self.cfg
    return ekf(obs, c.dt, c.natural_frequency, c.damping, c.process_noise, c.obs_noise,
               c.omega_init_std).astype(np.float32)

  def particle_filter(self, obs: np.ndarray) -> np.ndarray:
    """The particle filter's estimates [B, T, 3] (float32) for observations [B, T, 2], seeded
    by `eval_seed`: the same array of observations gives the same estimates (the rows share
    one random stream, so a row's estimate also depends on the rows beside it)."""
    c = self.cfg
    rng = np.random.default_rng([_PF_STREAM, c.eval_seed])
    return particle_filter(obs, c.dt, c.natural_frequency, c.damping, c.process_noise,
                           c.obs_noise, c.omega_init_std, c.num_particles,
                           rng).astype(np.float32)

  @functools.cached_property
  def _pf(self) -> np.ndarray:
    """The particle filter on the held-out set, run at the first evaluation of this task
    config in this process (seconds; a sweep's worker trains many members of one config)."""
    key = tuple(sorted(self.cfg.items()))
    if key not in _PF_DONE:
      if len(_PF_DONE) >= 4:
        _PF_DONE.pop(next(iter(_PF_DONE)))
      _PF_DONE[key] = self.particle_filter(self._eval["x"])
      _PF_DONE[key].setflags(write=False)
    return _PF_DONE[key]

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    m = self.compare(super().metrics(ys, data), "ekf", self._ekf, data)
    m = self.compare(m, "pf", self._pf, data)
    return {**m, "ekf_over_pf": m["ekf_mse"] / m["pf_mse"]}
