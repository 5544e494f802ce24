"""Regime switching: the forward algorithm against brute-force enumeration of regime paths."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rnn_research.tasks import multiscale

CFG = dict(name="multiscale", eval_size=128)


def _brute_force_posterior(obs, means, phi, sigma, switch):
  """p(s_t | o_1..o_t) by summing the joint over every regime path of length t."""
  k, length = len(means), len(obs)

  def normal(x, mu, var):
    return math.exp(-0.5 * (x - mu) ** 2 / var) / math.sqrt(2 * math.pi * var)

  out = np.zeros((length, k))
  for t in range(1, length + 1):
    for path in itertools.product(range(k), repeat=t):
      p = normal(obs[0], means[path[0]], sigma ** 2 / (1 - phi ** 2)) / k
      for i in range(1, t):
        p *= (1 - switch) if path[i] == path[i - 1] else switch / (k - 1)
        mu = means[path[i]]
        p *= normal(obs[i], mu + phi * (obs[i - 1] - mu), sigma ** 2)
      out[t - 1, path[-1]] += p
    out[t - 1] /= out[t - 1].sum()
  return out


def test_forward_algorithm_matches_enumeration():
  task = multiscale.Multiscale(dict(CFG, length=5, mean_duration=3.0), 4, 0)
  obs = task.train_batch(0)["x"][:2, :, 0].astype(np.float64)
  post = multiscale.forward_posterior(obs, task.means, 0.5, 0.5, 1 / 3)
  for i in range(2):
    exact = _brute_force_posterior(obs[i], task.means, 0.5, 0.5, 1 / 3)
    np.testing.assert_allclose(np.exp(post[i]), exact, atol=1e-10)


def test_regimes_persist_and_switch():
  task = multiscale.Multiscale(dict(CFG, length=400), 32, 0)
  y = task.train_batch(0)["y"]
  switches = (y[:, 1:] != y[:, :-1]).mean()
  assert switches == pytest.approx(1 / 20, rel=0.2)
  assert set(np.unique(y)) == {0, 1, 2}


def test_oracle_beats_chance_and_is_reproduced_by_its_predictor():
  task = multiscale.Multiscale(CFG, 32, 0)
  m = task.evaluate(lambda b: task.oracle(b["x"]))
  assert m["xent"] == pytest.approx(m["oracle_xent"], rel=1e-6)
  assert m["accuracy"] == pytest.approx(m["oracle_accuracy"])
  assert m["oracle_accuracy"] > m["chance_accuracy"] + 0.3
  assert m["oracle_xent"] < m["chance_xent"] - 0.3
  assert m["chance_xent"] == math.log(3)
