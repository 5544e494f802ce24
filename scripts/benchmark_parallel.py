#!/usr/bin/env python
"""Parallel-scan cells (min_gru, min_lstm) against the sequential gru and lstm, by length T.

  python scripts/benchmark_parallel.py                       # T = 128, 1024, 8192; ~2-3 min
  python scripts/benchmark_parallel.py --lengths=64,512 --batch=32 --hidden=256 --reps=3

One layer built by `rnn_research.core.models.build(..., out_features=None)`: gru/lstm with the
default engine (`auto`: the sequential scan with the custom VJP on CPU); min cells as
`min_gru:associative` (`jax.lax.associative_scan`) and `min_gru:scan` (a sequential scan of the
same elementwise recurrence, what `auto` picks on CPU). fwd+bwd = jitted gradient of sum(outputs) w.r.t. every
parameter and the input. Timings are the median of `--reps` rounds after one warm-up; each
round runs every cell once (round-robin), so machine noise hits all alike. Memory is XLA's
`memory_analysis()` of the compiled fwd+bwd: temporaries + arguments + outputs.
Prints a markdown table and, per min cell, the shortest T at which it beats both gru and lstm.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

try:
  import rnn_research  # noqa: F401
except ImportError:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_research.core.models import build

CELLS = ("gru", "lstm", "min_gru:associative", "min_gru:scan", "min_lstm:associative",
         "min_lstm:scan")
SEQUENTIAL = ("gru", "lstm")


def parse_ints(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v.strip()]


def compile_fwd_bwd(spec: str, batch: int, length: int, features: int, hidden: int):
  """(run: () -> blocking result, compile seconds, memory MB) of one layer's fwd+bwd;
  `spec` is a cell, or cell:engine (min cells: associative, or scan = the sequential scan)."""
  cell, _, engine = spec.partition(":")
  model = build(dict(cell=cell, hidden_size=hidden, engine=engine or "auto"),
                in_features=features, out_features=None, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  xs = jnp.asarray(np.random.default_rng(0).normal(size=(batch, length, features)),
                   jnp.float32)

  def loss(params, xs):
    return jnp.sum(nnx.merge(graphdef, params)(xs))

  t0 = time.perf_counter()
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
  compile_s = time.perf_counter() - t0
  try:
    m = compiled.memory_analysis()
    mem = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes) / 2**20
  except Exception:  # not every backend reports it
    mem = float("nan")
  run = lambda: jax.block_until_ready(compiled(params, xs))  # noqa: E731
  run()  # warm-up
  return run, compile_s, mem


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=16, help="B")
  parser.add_argument("--features", type=int, default=32, help="F, input width")
  parser.add_argument("--hidden", type=int, default=128, help="H")
  parser.add_argument("--reps", type=int, default=5, help="timed rounds (median)")
  parser.add_argument("--lengths", type=parse_ints, default=[128, 1024, 8192], help="T values")
  parser.add_argument("--cells", default=",".join(CELLS),
                      help="comma-separated cells, or cell:engine")
  args = parser.parse_args(argv)
  cells = [c for c in args.cells.split(",") if c]

  devices = ", ".join(str(d) for d in jax.devices())
  print(f"machine: {platform.machine()} {platform.processor() or ''}".rstrip()
        + f", {os.cpu_count()} CPUs visible; jax {jax.__version__} on {devices}")
  print(f"B={args.batch}, F={args.features}, H={args.hidden}, 1 layer; "
        f"median of {args.reps} rounds after a warm-up\n")
  print("| T | cell | fwd+bwd ms | fwd+bwd tokens/s | vs gru | vs lstm | compile s "
        "| mem MB (temp+arg+out) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  speed: dict[tuple[int, str], float] = {}
  for length in args.lengths:
    runs, info = {}, {}
    for cell in cells:
      runs[cell], compile_s, mem = compile_fwd_bwd(cell, args.batch, length, args.features,
                                                   args.hidden)
      info[cell] = (compile_s, mem)
    times: dict[str, list[float]] = {cell: [] for cell in cells}
    for _ in range(args.reps):
      for cell in cells:
        t0 = time.perf_counter()
        runs[cell]()
        times[cell].append(time.perf_counter() - t0)
    for cell in cells:
      seconds = statistics.median(times[cell])
      speed[length, cell] = args.batch * length / seconds
    for cell in cells:
      tps = speed[length, cell]
      ratios = [f"{tps / speed[length, ref]:.2f}×" if (length, ref) in speed else "-"
                for ref in SEQUENTIAL]
      compile_s, mem = info[cell]
      print(f"| {length} | {cell} | {1e3 * args.batch * length / tps:.2f} | {tps:,.0f} | "
            f"{' | '.join(ratios)} | {compile_s:.2f} | {mem:.1f} |", flush=True)
  print()
  refs = [c for c in SEQUENTIAL if c in cells]
  for cell in cells:
    if cell in SEQUENTIAL or not refs:
      continue
    wins = [t for t in args.lengths if all(speed[t, cell] > speed[t, r] for r in refs)]
    if not wins:
      print(f"{cell}: slower than {' or '.join(refs)} at every T measured")
    elif wins == [t for t in args.lengths if t >= min(wins)]:
      print(f"{cell}: faster than {' and '.join(refs)} from T = {min(wins)} on "
            f"(at every T measured >= {min(wins)})")
    else:
      print(f"{cell}: faster than {' and '.join(refs)} at T in {wins} only")


if __name__ == "__main__":
  main()
