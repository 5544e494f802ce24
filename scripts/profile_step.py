#!/usr/bin/env python
"""Where the trainer's step spends its time: XLA's own ops, per step, from a profiler trace.

  python scripts/profile_step.py --cell=lstm --size=64,150,2,32      # a report-sized LSTM
  taskset -c 0 python scripts/profile_step.py --cell=gru --size=32,128,64,128 --top=15

Builds the step that scripts/benchmark.py times (`benchmark_train.ours`: the trainer's
`train_step_fn` on `build(config.model)`, a Linear(H, 1) readout, a regression loss and
adam), runs it `--steps` times under `jax.profiler.trace`, and reads the trace's complete
events back. Each event's self time is its duration less that of the events nested in it on
the same thread, so a loop (`while.N`) counts only its own overhead and its body's ops count
once. Printed per instruction of the compiled HLO, largest self time first: calls per step,
µs per call, ms per step, share of the traced total, and the instruction (its shape and
operands); then the thunk executor's own time (dispatching each loop body's ops), and the step
timed without the profiler for comparison. Events of threads that only wait (Python, the
blocking call) are left out.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Any

try:
  import rnn_research  # noqa: F401
except ImportError:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

import benchmark_train
from benchmark import parse_model
from benchmark_harness import markdown_row, machine

DISPATCH = "ThunkExecutor::Execute"  # self time: the executor between one body's thunks


def self_times(events: list[dict[str, Any]]) -> dict[str, list[float]]:
  """{name: [self µs of each call]} of the complete ("X") events; nesting is per thread,
  by time: an event holds those that start and end within it."""
  by_thread = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and "dur" in e:
      by_thread[(e.get("pid"), e.get("tid"))].append(e)
  out: dict[str, list[float]] = collections.defaultdict(list)
  for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack: list[list[Any]] = []  # [end, name, self]
    for e in evs:
      while stack and e["ts"] >= stack[-1][0]:
        _, name, own = stack.pop()
        out[name].append(own)
      if stack:
        stack[-1][2] -= e["dur"]
      stack.append([e["ts"] + e["dur"], e["name"], float(e["dur"])])
    for _, name, own in stack:
      out[name].append(own)
  return out


def hlo_lines(text: str) -> dict[str, str]:
  """{instruction name: its shape and op, e.g. 'f32[64,128] fusion(h, w)'} of compiled HLO."""
  lines = {}
  for line in text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(([^)]*)\)", line)
    if m:
      operands = ", ".join(re.sub(r"^%", "", o.strip()) for o in m.group(4).split(",")[:3])
      lines[m.group(1)] = f"{re.sub(r'{[^}]*}', '', m.group(2))} {m.group(3)}({operands})"
  return lines


def profile(cell: str, size: tuple[int, ...], overrides: dict[str, Any], steps: int
            ) -> tuple[dict[str, list[float]], str, float]:
  """Self times of `steps` traced steps, the step's compiled HLO text, and the step's median
  ms timed without the profiler."""
  data = benchmark_train.make_data(size)
  bench = benchmark_train.ours(cell, size, data, "profiled", {"engine": "auto", **overrides})
  wall = []
  for _ in range(3 + 9):
    t0 = time.perf_counter()
    jax.block_until_ready(bench.call())
    wall.append(time.perf_counter() - t0)
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(steps):
        jax.block_until_ready(bench.call())
    files = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
    if not files:
      raise RuntimeError(f"the profiler wrote no perfetto trace under {tmp}")
    with gzip.open(files[0]) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  return self_times(events), bench.compiled.as_text(), 1e3 * statistics.median(wall[3:])


def by_kind(times: dict[str, list[float]], hlo: dict[str, str]) -> dict[str, list[float]]:
  """The instructions' self times pooled by name without its number (`ynn_fusion.3` and
  `ynn_fusion` -> `ynn_fusion`: XLA names an instruction after what it fuses)."""
  kinds: dict[str, list[float]] = collections.defaultdict(list)
  for name, v in times.items():
    if name in hlo:
      kinds[re.sub(r"\.\d+$", "", name)] += v
  return kinds


def table(times: dict[str, list[float]], hlo: dict[str, str], steps: int, top: int
          ) -> list[str]:
  """Markdown rows: the `top` entries of `times` (instructions, or kinds of them) by self
  time per step, the rest, the thunk executor's own time and the traced total."""
  ops = sorted(((k, v) for k, v in times.items() if k in hlo), key=lambda kv: -sum(kv[1]))
  dispatch = times.get(DISPATCH, [])
  total = sum(dispatch) + sum(sum(v) for _, v in ops)
  ms = lambda us: f"{us / steps / 1e3:.3f}"  # noqa: E731
  rows = [markdown_row(["op", "calls/step", "µs/call", "ms/step", "share", "HLO"]),
          "|---|---|---|---|---|---|"]
  for name, v in ops[:top]:
    rows.append(markdown_row([name, f"{len(v) / steps:g}", f"{sum(v) / len(v):.1f}",
                              ms(sum(v)), f"{sum(v) / total:.1%}",
                              f"`{hlo[name]}`" if hlo[name] else ""]))
  rest = sum(sum(v) for _, v in ops[top:])
  rows.append(markdown_row([f"{max(len(ops) - top, 0)} other ops", "", "", ms(rest),
                            f"{rest / total:.1%}", ""]))
  rows.append(markdown_row(["thunk dispatch", f"{len(dispatch) / steps:g}",
                            f"{sum(dispatch) / max(len(dispatch), 1):.1f}", ms(sum(dispatch)),
                            f"{sum(dispatch) / total:.1%}", f"`{DISPATCH}` self time"]))
  rows.append(markdown_row(["**traced total**", "", "", ms(total), "100%", ""]))
  return rows


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--cell", default="lstm", choices=("rnn", "lstm", "gru"))
  p.add_argument("--size", default="64,150,2,32", help="B,T,F,H[,L]")
  p.add_argument("--model", default="", help="one set of config.model overrides, e.g. "
                                            "'norm=layer_per_step'")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--top", type=int, default=12)
  args = p.parse_args(argv)
  size = tuple(int(v) for v in args.size.split(","))
  if len(size) not in (4, 5):
    p.error(f"--size wants B,T,F,H[,L], got {args.size!r}")
  models = parse_model(args.model)
  if len(models) > 1:
    p.error("--model takes one set of overrides (no ';')")
  times, hlo, wall = profile(args.cell, size, models[0] if models else {}, args.steps)
  print(machine())
  print(f"{args.cell} {args.size} {args.model or 'default model'}: self time per step, "
        f"{args.steps} steps traced; the step without the profiler: {wall:.2f} ms "
        f"(median of 9)\n")
  lines = hlo_lines(hlo)
  kinds = by_kind(times, lines)
  print("By kind (instructions of one name but for the number):\n")
  print("\n".join(table({**kinds, DISPATCH: times.get(DISPATCH, [])}, dict.fromkeys(kinds, ""),
                         args.steps, args.top)))
  print("\nBy instruction:\n")
  print("\n".join(table(times, lines, args.steps, args.top)))


if __name__ == "__main__":
  main()
