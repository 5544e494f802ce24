"""The copy memory problem's layout and chance level."""
from __future__ import annotations

import math

import numpy as np

from rnn_research.tasks.copy import Copy


def test_layout_and_weights():
  task = Copy({"num_symbols": 4, "copy_length": 3, "delay": 5}, 6, 0)
  batch = task.train_batch(0)
  tokens = batch["x"].argmax(-1)
  assert batch["x"].shape == (6, 12, 6) and task.out_features == 4
  np.testing.assert_array_equal(tokens[:, 3:8], 4)             # blanks
  np.testing.assert_array_equal(tokens[:, 8], 5)               # go marker
  np.testing.assert_array_equal(tokens[:, 9:], 4)
  np.testing.assert_array_equal(batch["y"][:, -3:], tokens[:, :3])
  np.testing.assert_array_equal(batch["weight"], np.repeat([[0] * 9 + [1] * 3], 6, 0))


def test_chance_xent_is_log_alphabet():
  task = Copy({"num_symbols": 8}, 64, 0)
  m = task.evaluate(lambda b: np.zeros(b["x"].shape[:2] + (8,), np.float32))
  assert m["chance_xent"] == math.log(8) and m["chance_accuracy"] == 1 / 8
  assert abs(m["xent"] - math.log(8)) < 1e-6
  perfect = task.evaluate(lambda b: 50.0 * np.eye(8, dtype=np.float32)[b["y"]])
  assert perfect["accuracy"] == 1.0 and perfect["xent"] < 1e-6
