"""The pendulum's simulation and its extended Kalman filter baseline."""
from __future__ import annotations

import numpy as np
import pytest

from rnn_research.tasks import pendulum

SMALL = dict(name="pendulum", length=60, eval_size=64)


def test_targets_are_a_state_on_the_circle():
  task = pendulum.Pendulum(SMALL, 8, 0)
  y = task.train_batch(0)["y"]
  np.testing.assert_allclose(y[..., 0] ** 2 + y[..., 1] ** 2, 1.0, atol=1e-5)
  x = task.train_batch(0)["x"]
  resid = x - y[..., :2]
  assert resid.std() == pytest.approx(0.3, rel=0.1)          # obs_noise


def test_noiseless_pendulum_follows_euler_steps():
  cfg = dict(SMALL, process_noise=0.0, damping=0.0)
  task = pendulum.Pendulum(cfg, 4, 0)
  y = task.train_batch(0)["y"].astype(np.float64)
  theta = np.arctan2(y[..., 0], y[..., 1])
  omega = y[..., 2]
  dtheta = np.angle(np.exp(1j * (theta[:, 1:] - theta[:, :-1])))
  np.testing.assert_allclose(dtheta, 0.1 * omega[:, 1:], atol=1e-4)
  np.testing.assert_allclose(omega[:, 1:] - omega[:, :-1], -0.1 * 4.0 * np.sin(theta[:, :-1]),
                             atol=1e-4)


def test_ekf_is_the_baseline_and_beats_naive_predictors():
  task = pendulum.Pendulum(SMALL, 16, 0)
  own = task.evaluate(lambda b: task.filter(b["x"]))
  assert own["mse_over_ekf"] == pytest.approx(1.0, abs=1e-6)
  zeros = task.evaluate(lambda b: np.zeros(b["x"].shape[:2] + (3,)))
  raw = task.evaluate(lambda b: np.concatenate([b["x"], np.zeros_like(b["x"][..., :1])], -1))
  assert own["ekf_mse"] < 0.3 * raw["mse"] < 0.3 * zeros["mse"]


def test_ekf_tracks_the_angle_when_noise_is_small():
  cfg = dict(SMALL, obs_noise=0.01)
  task = pendulum.Pendulum(cfg, 8, 0)
  batch = task.train_batch(0)
  est = task.filter(batch["x"])
  err = (est[..., :2] - batch["y"][..., :2]) ** 2
  assert err[:, 10:].mean() < 1e-3
