"""`temperature`: one-step-ahead forecasting of a real series, hourly Seattle temperatures.

Real-time filtering on real data (lecture section 5): at hour t the model has read
x_1..x_t and predicts x_{t+1}. The series is the 8,759 hourly temperatures of 2010 shipped
in the `vega_datasets` package (`_data/seattle-temps.csv`; read with the csv module, the
package is never imported because its import needs pandas).

Split and scaling: chronological, the first `train_fraction` of the hours for training, the
rest held out; both standardised with the training part's mean and standard deviation, so
metrics are in units of the training standard deviation. Training examples are random crops
of `length` + 1 hours of the training part (x = hours s..s+T-1, y = hours s+1..s+T); the
held-out set is the held-out part cut into consecutive non-overlapping crops of the same
length (each starts cold, as training crops do).

Metrics: `mse` of the one-step forecast; baseline `persistence_mse`, the forecast
x_hat_{t+1} = x_t (tomorrow's weather is today's), and `mse_over_persistence`.
"""
from __future__ import annotations

import csv
import functools
from typing import Any

import numpy as np

from rnn_research.tasks import batching, package_data
from rnn_research.tasks.base import TASKS, Batch, Key, RegressionTask


@functools.lru_cache(maxsize=1)
def load_series() -> np.ndarray:
  """The hourly temperatures (deg F, float64 [8759]) in file order."""
  path = package_data.package_file("vega_datasets", "_data/seattle-temps.csv")
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  return np.array([float(row["temp"]) for row in rows])


@TASKS.register("temperature")
class Temperature(RegressionTask):
  """Predict next hour's (standardised) Seattle temperature from the hours so far."""
  main_metric = ("eval/mse_over_persistence", "min")

  name = "temperature"
  config_keys = {
      "length": Key(128, "Length T of training and held-out crops (hours).", low=1),
      "train_fraction": Key(0.8, "Fraction of the series (from its start) used for training; "
                                 "the rest is held out.", low=0.0, high=1.0, low_open=True),
  }

  def setup(self) -> None:
    c = self.cfg
    series = load_series()
    n_train = int(len(series) * c.train_fraction)
    if n_train < c.length + 1 or len(series) - n_train < c.length + 1:
      raise ValueError(
          f"config.task.length={c.length} does not fit: training part {n_train} and held-out "
          f"part {len(series) - n_train} hours must each hold length + 1; valid range: "
          f"[1, {min(n_train, len(series) - n_train) - 1}]")
    self.mean = float(series[:n_train].mean())
    self.std = float(series[:n_train].std())
    z = ((series - self.mean) / self.std)[:, None]          # [N, 1]
    self._train_part, held_out = z[:n_train], z[n_train:]
    self.in_features = self.out_features = 1
    starts = np.arange((len(held_out) - 1) // c.length) * c.length
    self._set_eval(self._window(held_out, starts))

  def _window(self, part: np.ndarray, starts: np.ndarray) -> Batch:
    seq = batching.crops(part, starts, self.cfg.length + 1)  # [B, T + 1, 1]
    return batching.make_batch(seq[:, :-1], seq[:, 1:])

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    high = len(self._train_part) - self.cfg.length            # last start s: s + T <= N - 1
    return self._window(self._train_part, rng.integers(0, high, n))

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    return self.compare(super().metrics(ys, data), "persistence", data["x"], data)
