"""`multiscale`: track a long-lived context that shifts suddenly (regime switching).

Lecture section 3: multiscale data has context that "is long-lived (e.g. a full sentence),
but can shift suddenly (e.g. that sentence ends and a new one starts)", while details evolve
on a faster scale. Here the slow context is a regime s_t in {0..K-1} (a Markov chain that
stays with probability 1 - p, p = 1 / mean_duration, so regimes last a geometric number of
steps with mean `mean_duration`, and otherwise jumps to one of the other K - 1 uniformly);
the fast detail is an AR(1) process around the regime's mean mu_k = spacing (k - (K-1)/2):

  o_1 ~ N(mu_{s_1}, sigma^2 / (1 - phi^2)),   o_t = mu_{s_t} + phi (o_{t-1} - mu_{s_t}) + sigma e_t.

Inputs are the observations o_t, the target at every step is the current regime s_t
(classification; the model must integrate evidence since the last switch and forget what
came before it). Since o is observed, the pair is an autoregressive HMM and the forward
algorithm gives the exact filtered posterior p(s_t | o_1..o_t) (`forward_posterior`).

The long-stream form (`stream_length` S > 0, truncated BPTT: tasks/streams.py) draws each
row as one regime-switching sequence of S steps (the same chain, only longer); the held-out
set stays `eval_size` sequences of `length` steps from o_1, s_1 (set `length` long to evaluate
long streams).

Metrics: `accuracy`, `xent` (nats). Baselines: `chance_accuracy` (the held-out set's majority
regime), `chance_xent` = log K, and the Bayes-optimal filter, `oracle_accuracy` and
`oracle_xent` (the forward algorithm's argmax and log posterior).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from rnn_research.tasks import batching, losses
from rnn_research.tasks.base import TASKS, Batch, ClassificationTask, Key
from rnn_research.tasks.streams import STREAM_LENGTH, Streams


def forward_posterior(obs: np.ndarray, means: np.ndarray, phi: float, sigma: float,
                      switch: float) -> np.ndarray:
  """log p(s_t | o_1..o_t) [B, T, K] of observations obs [B, T] (forward algorithm)."""
  k = len(means)
  log_trans = np.full((k, k), math.log(switch / (k - 1)) if k > 1 else -np.inf)
  np.fill_diagonal(log_trans, math.log1p(-switch))
  out = np.empty(obs.shape + (k,))
  alpha = None
  for t in range(obs.shape[1]):
    if t == 0:
      centre, var = np.broadcast_to(means, (len(obs), k)), sigma**2 / (1 - phi**2)
      prior = np.full((len(obs), k), -math.log(k))
    else:
      centre, var = means + phi * (obs[:, t - 1, None] - means), sigma**2
      prior = np.logaddexp.reduce(alpha[:, :, None] + log_trans, axis=1)
    loglik = -0.5 * (obs[:, t, None] - centre)**2 / var - 0.5 * math.log(2 * math.pi * var)
    alpha = prior + loglik
    alpha = alpha - np.logaddexp.reduce(alpha, axis=1, keepdims=True)
    out[:, t] = alpha
  return out


@TASKS.register("multiscale")
class Multiscale(Streams, ClassificationTask):
  """Name the current regime of a regime-switching AR(1) process at every step."""
  main_metric = ("eval/accuracy", "max")

  name = "multiscale"
  held_out = 512
  config_keys = {
      "num_regimes": Key(3, "Number K of regimes (classes).", low=2),
      "mean_duration": Key(20.0, "Mean regime duration in steps (switch probability "
                                 "1 / mean_duration per step).", low=1.0, low_open=True),
      "ar_coef": Key(0.5, "AR(1) coefficient phi of the fast process around the regime mean.",
                     low=0.0, high=0.99),
      "noise_std": Key(0.5, "Innovation standard deviation sigma of the fast process.", low=0.0,
                       low_open=True),
      "mean_spacing": Key(1.0, "Distance between neighbouring regime means.", low=0.0),
      "length": Key(100, "Sequence length T.", low=1),
      "stream_length": STREAM_LENGTH,
  }

  def setup(self) -> None:
    c = self.cfg
    k = c.num_regimes
    self.means = c.mean_spacing * (np.arange(k) - (k - 1) / 2)
    self.in_features, self.out_features = 1, k
    self._set_generated_eval()
    self._oracle = self.oracle(self._eval["x"])

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    return self._chain(rng, n, self.cfg.length)

  def sample_stream(self, rng: np.random.Generator, n: int) -> Batch:
    return self._chain(rng, n, self.cfg.stream_length)

  def _chain(self, rng: np.random.Generator, n: int, length: int) -> Batch:
    """n sequences of `length` steps: regimes s [n, length] and observations o [n, length]."""
    c = self.cfg
    k = c.num_regimes
    switches = rng.random((n, length)) < 1.0 / c.mean_duration
    jumps = rng.integers(1, k, (n, length))
    noise = rng.standard_normal((n, length)) * c.noise_std
    regime = np.empty((n, length), np.int32)
    obs = np.empty((n, length))
    regime[:, 0] = rng.integers(0, k, n)
    mu = self.means[regime[:, 0]]
    obs[:, 0] = mu + noise[:, 0] / math.sqrt(1 - c.ar_coef**2)
    for t in range(1, length):
      regime[:, t] = np.where(switches[:, t], (regime[:, t - 1] + jumps[:, t]) % k,
                              regime[:, t - 1])
      mu = self.means[regime[:, t]]
      obs[:, t] = mu + c.ar_coef * (obs[:, t - 1] - mu) + noise[:, t]
    return batching.make_batch(obs[..., None], regime)

  def oracle(self, x: np.ndarray) -> np.ndarray:
    """The exact filter's log posterior [B, T, K] (float32) for inputs x [B, T, 1]."""
    c = self.cfg
    return forward_posterior(np.asarray(x, np.float64)[..., 0], self.means, c.ar_coef,
                             c.noise_std, 1.0 / c.mean_duration).astype(np.float32)

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    y, w = data["y"], data["weight"]
    counts = np.bincount(y[w > 0], weights=w[w > 0], minlength=self.out_features)
    return {**super().metrics(ys, data),
            "chance_accuracy": counts.max() / counts.sum(),
            "chance_xent": math.log(self.out_features),
            "oracle_accuracy": losses.weighted_accuracy(self._oracle, y, w),
            "oracle_xent": losses.weighted_xent(self._oracle, y, w)}
