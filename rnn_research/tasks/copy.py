"""`copy`: the copy memory problem (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

A probe of long-range dependence (lecture section 2.2.3: gradients are biased toward
short-term dependence; section 4: the LSTM's cell state is the fix). With K symbols from an
alphabet of A, D = `delay` blanks, and the time index from 0, one sequence of length
T = 2K + D + 1 is

  input   s_1 .. s_K   blank x D   GO   blank x K
  target  (unscored)                    s_1 .. s_K      (weight 1 on these K steps only)

so the model must hold K symbols for D + K + 1 steps. Inputs are one-hot over A + 2 tokens
(ids 0..A-1 symbols, A blank, A+1 go); outputs are logits over the A symbols.

Metrics: `xent` (nats per output symbol) and `accuracy` over the K output positions.
Baseline `chance_xent` = log A and `chance_accuracy` = 1 / A: a model without memory can do no
better on the scored positions. (Arjovsky et al.'s memoryless baseline 10 log 8 / (T + 20)
averages over every step including the blanks; scored on the outputs only it equals log A.)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from rnn_research.tasks import batching
from rnn_research.tasks.base import TASKS, Batch, ClassificationTask, Key


@TASKS.register("copy")
class Copy(ClassificationTask):
  """Reproduce K symbols after a delay, when a go marker says so."""
  main_metric = ("eval/accuracy", "max")

  name = "copy"
  held_out = 512
  config_keys = {
      "num_symbols": Key(8, "Alphabet size A of the symbols to copy.", low=2),
      "copy_length": Key(5, "Number K of symbols to remember.", low=1),
      "delay": Key(30, "Number D of blanks between the last symbol and the go marker.", low=0),
  }

  def setup(self) -> None:
    c = self.cfg
    self.length = 2 * c.copy_length + c.delay + 1
    self.in_features, self.out_features = c.num_symbols + 2, c.num_symbols
    self._set_generated_eval()

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    c = self.cfg
    k, blank = c.copy_length, c.num_symbols
    symbols = rng.integers(0, c.num_symbols, (n, k))
    tokens = np.full((n, self.length), blank)
    tokens[:, :k] = symbols
    tokens[:, k + c.delay] = blank + 1                      # go marker
    y = np.zeros((n, self.length), np.int32)
    y[:, -k:] = symbols
    weight = np.zeros((n, self.length), np.float32)
    weight[:, -k:] = 1.0
    return batching.make_batch(batching.one_hot(tokens, self.in_features), y, weight=weight)

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    a = self.cfg.num_symbols
    return {**super().metrics(ys, data), "chance_xent": math.log(a), "chance_accuracy": 1.0 / a}
