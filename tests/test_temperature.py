"""Seattle temperatures: the shipped series, the split, the crops and the persistence baseline."""
from __future__ import annotations

import numpy as np
import pytest

from rnn_research.tasks import temperature


def test_shipped_series():
  series = temperature.load_series()
  assert series.shape == (8759,) and np.all(np.isfinite(series))
  assert 10 < series.min() < series.max() < 110             # deg F


def test_persistence_mse_on_a_hand_example(monkeypatch):
  series = np.array([0, 1, 3, 6, 10, 15, 21, 28, 36, 45], float)
  monkeypatch.setattr(temperature, "load_series", lambda: series)
  task = temperature.Temperature({"length": 2, "train_fraction": 0.5}, 4, 0)
  # Train part 0, 1, 3, 6, 10: mean 4, variance 13.2. Held-out windows (T = 2):
  # x = 15, 21 -> y = 21, 28 and x = 28, 36 -> y = 36, 45; persistence errors 6, 7, 8, 9.
  assert task.mean == 4.0 and task.std ** 2 == pytest.approx(13.2)
  data = task.eval_batches()[0]
  np.testing.assert_allclose(data["x"][:2, :, 0] * task.std + 4, [[15, 21], [28, 36]], atol=1e-5)
  np.testing.assert_allclose(data["y"][:2, :, 0] * task.std + 4, [[21, 28], [36, 45]], atol=1e-5)
  assert data["weight"][2:].sum() == 0                      # padding rows
  expected = (36 + 49 + 64 + 81) / 4 / 13.2
  m = task.evaluate(lambda b: b["y"] + 1.0 / task.std)      # off by one degree everywhere
  assert m["persistence_mse"] == pytest.approx(expected, rel=1e-5)
  assert m["mse"] == pytest.approx(1 / 13.2, rel=1e-5)
  assert m["mse_over_persistence"] == pytest.approx(1 / (36 + 49 + 64 + 81) * 4, rel=1e-5)


def test_train_crops_come_from_the_train_part_and_target_the_next_hour():
  task = temperature.Temperature({}, 16, 0)
  z = (temperature.load_series() - task.mean) / task.std
  n_train = int(0.8 * len(z))
  assert abs(z[:n_train].mean()) < 1e-9
  batch = task.train_batch(2)
  np.testing.assert_array_equal(batch["x"][:, 1:], batch["y"][:, :-1])
  for row in batch["x"][:, :, 0]:
    start = np.flatnonzero(np.isclose(z[:n_train], row[0], atol=1e-6))
    assert any(np.allclose(z[s:s + 128], row, atol=1e-5) for s in start if s + 129 <= n_train)
  # Held-out crops tile the last 20%, without overlap.
  first = task.eval_batches()[0]["x"][0, :, 0]
  np.testing.assert_allclose(first, z[n_train:n_train + 128], atol=1e-5)


def test_length_too_long_is_rejected():
  with pytest.raises(ValueError, match="valid range"):
    temperature.Temperature({"length": 5000}, 4, 0)
