"""The adding problem: markers, target and the 1/6 chance level."""
from __future__ import annotations

import numpy as np

from rnn_research.tasks.adding import Adding


def test_markers_and_target():
  task = Adding({"length": 20}, 32, 0)
  batch = task.train_batch(0)
  values, markers = batch["x"][..., 0], batch["x"][..., 1]
  assert np.all(markers[:, :10].sum(1) == 1) and np.all(markers[:, 10:].sum(1) == 1)
  np.testing.assert_allclose(batch["y"][:, -1, 0], (values * markers).sum(1), rtol=1e-6)
  assert np.all(batch["weight"][:, :-1] == 0) and np.all(batch["weight"][:, -1] == 1)


def test_chance_mse_is_one_sixth():
  task = Adding({}, 128, 0)
  m = task.evaluate(lambda b: np.ones(b["x"].shape[:2] + (1,), np.float32))
  n = task.eval_size
  # (s - 1)^2 for s the sum of two U[0, 1] has variance 1/40 + 1/24 - 1/36.
  stderr = np.sqrt((1 / 40 + 1 / 24 - 1 / 36) / n)
  assert abs(m["chance_mse"] - 1 / 6) < 4 * stderr
  assert m["mse"] == m["chance_mse"] and m["mse_over_chance"] == 1.0
