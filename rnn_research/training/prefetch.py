"""The training batches of a run, made a few steps ahead of the train step that reads them.

A training batch is a pure function of (seed, step) (tasks/batching.py), so making it early
changes nothing it holds: the loop sees the same arrays in the same order. Making them in runs
of up to `MAX_AHEAD` steps is what saves time: on XLA:CPU, one batch made between two train
steps cost 0.3-0.5 ms more than the same batch made among others (a 3-4 ms step of the report's
adding and norm sweeps, one core; docs/speed.md). The run is sized from the first batch so that
it holds at most `MAX_BYTES`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np

MAX_AHEAD = 32  # batches made at once
MAX_BYTES = 64 << 20  # ... and at most this many bytes of them


def ahead(make: Callable[[int], Any], start: int, stop: int) -> Iterator[Any]:
  """make(step) for step = start, ..., stop - 1, in order, each made up to `MAX_AHEAD` steps
  before it is yielded."""
  step, size = start, 1
  while step < stop:
    made = [make(s) for s in range(step, min(stop, step + size))]
    if step == start:
      nbytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(made[0]))
      size = max(1, min(MAX_AHEAD, MAX_BYTES // max(1, nbytes)))
    step += len(made)
    yield from made
