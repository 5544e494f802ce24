"""Seeds together or one after another: one vmapped train step over K seeds vs K jitted steps.

  python scripts/seeds_benchmark.py [--cells=lstm,gru] [--hidden=32,128] [--seeds=1,4,8,16]

Prints a markdown table of seed-steps per second (K seeds × steps / s) of the trainer's own
step (`train.train_step_fn`, on `configs/tasks/kalman.py` shapes) both ways, and their ratio:
above 1, `--seeds_mode=vmap` pays on this backend. Medians of `--reps` timings.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs.tasks import kalman  # noqa: E402
from rnn_research.training import train  # noqa: E402


def _time(fn, reps: int) -> float:
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def measure(cell: str, hidden: int, k: int, steps: int, reps: int) -> tuple[float, float]:
  """(sequential, vmapped) seed-steps per second for K seeds of one config."""
  configs = []
  for seed in range(k):
    c = kalman.get_config()
    c.model.cell, c.model.hidden_size, c.train.seed = cell, hidden, seed
    configs.append(c)
  built = [train.init_state(c) for c in configs]
  task, graphdef, _, optimizer = built[0]
  step = train.train_step_fn(graphdef, task, optimizer)
  lr = np.float32(configs[0].train.learning_rate)
  single, batched = jax.jit(step), jax.jit(jax.vmap(step))
  states = [b[2] for b in built]
  batches = [[b[0].train_batch(s) for s in range(steps)] for b in built]
  stacked = jax.tree.map(lambda *x: np.stack(x), *states)
  stacked_batches = [jax.tree.map(lambda *x: np.stack(x), *[b[s] for b in batches])
                     for s in range(steps)]

  def sequential():
    out = None
    for i in range(k):
      state = states[i]
      for s in range(steps):
        state, out = single(state, batches[i][s], np.uint32(i), lr)
    return out

  def vmapped():
    state, out = stacked, None
    for s in range(steps):
      state, out = batched(state, stacked_batches[s], np.arange(k, dtype=np.uint32),
                           np.full(k, lr))
    return out

  return k * steps / _time(sequential, reps), k * steps / _time(vmapped, reps)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cells", default="lstm,gru")
  parser.add_argument("--hidden", default="32,128")
  parser.add_argument("--seeds", default="1,4,8,16")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--reps", type=int, default=3)
  args = parser.parse_args()
  print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}"
        f"; kalman task, batch 64, T 100\n")
  print("| cell | H | seeds K | sequential seed-steps/s | vmapped seed-steps/s | vmap / sequential |")
  print("| --- | --- | --- | --- | --- | --- |")
  for cell in args.cells.split(","):
    for hidden in (int(h) for h in args.hidden.split(",")):
      for k in (int(s) for s in args.seeds.split(",")):
        seq, vm = measure(cell, hidden, k, args.steps, args.reps)
        print(f"| {cell} | {hidden} | {k} | {seq:,.0f} | {vm:,.0f} | {vm / seq:.2f} |",
              flush=True)


if __name__ == "__main__":
  main()
