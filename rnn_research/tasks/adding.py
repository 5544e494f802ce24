"""`adding`: the adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

A probe of long-range dependence (lecture section 2.2.3) with a known chance level. Each of
T steps carries two inputs, a value u_t ~ U[0, 1] and a marker m_t in {0, 1}; exactly two
markers are set, one at a uniform position of the first half [0, T/2) and one of the second
half [T/2, T). The target, scored at the last step only (weight 1 there), is

  s = sum_t m_t u_t   (one output, out_features = 1).

Metric `mse` at the last step. Baseline `chance_mse`: always predicting 1 = E[s] gives
E[(s - 1)^2] = Var(s) = 2 / 12 = 1/6; it is computed on the held-out set itself (so it shows
the sampling error of that set), with `mse_over_chance`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from rnn_research.tasks import batching
from rnn_research.tasks.base import TASKS, Batch, Key, RegressionTask


@TASKS.register("adding")
class Adding(RegressionTask):
  """Add the two marked values of a long sequence of random numbers."""
  main_metric = ("eval/mse_over_chance", "min")

  name = "adding"
  held_out = 1024
  config_keys = {"length": Key(150, "Sequence length T (Le et al. 2015 use 150 to 750).", low=2)}

  def setup(self) -> None:
    self.in_features, self.out_features = 2, 1
    self._set_generated_eval()

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    length = self.cfg.length
    half = length // 2
    values = rng.uniform(0.0, 1.0, (n, length))
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers = np.zeros((n, length))
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    y = np.zeros((n, length, 1))
    y[:, -1, 0] = (values * markers).sum(1)
    weight = np.zeros((n, length))
    weight[:, -1] = 1.0
    return batching.make_batch(np.stack([values, markers], -1), y, weight=weight)

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    return self.compare(super().metrics(ys, data), "chance", np.ones_like(ys), data)
