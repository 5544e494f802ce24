"""The timing harness shared by scripts/benchmark.py's workloads (layer, train).

A `Bench` is one implementation at one (cell, size): a blocking closure already compiled and
run once. `run_rounds` warms every bench up once more, then times `reps` round-robin rounds,
so machine noise hits all alike; tables report medians.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import flax
import jax

from rnn_research.core.engine import strategy

try:
  import torch
except ImportError:  # torch rows are skipped with a note
  torch = None

Size = tuple[int, ...]  # (B, T, F, H) or (B, T, F, H, L): L stacked layers
FLAX_CELLS = {"rnn": "SimpleCell", "lstm": "OptimizedLSTMCell", "gru": "GRUCell"}
TORCH_CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


@dataclass
class Bench:
  """The timed `call` (and an optional forward `fwd`) of one implementation, with timings."""

  label: str
  call: Callable[[], Any]
  fwd: Callable[[], Any] | None = None
  compile_s: str = ""
  mem_mb: float | None = None
  loss: float | None = None  # the train workload's first-step loss
  compiled: Any = None  # the train workload's compiled step (ours), for its HLO
  times: list[float] = field(default_factory=list)
  fwd_times: list[float] = field(default_factory=list)


def first_call(call: Callable[[], Any]) -> tuple[Any, float]:
  """(result, seconds) of the first blocking call: trace + compile + run."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(call())
  return out, time.perf_counter() - t0


def memory_mb(compiled: Any) -> float | None:
  """Arguments + outputs + temporaries of a compiled executable, in MB (None if unknown)."""
  try:
    m = compiled.memory_analysis()
    total = (m.temp_size_in_bytes + m.output_size_in_bytes + m.argument_size_in_bytes
             - m.alias_size_in_bytes)
    return total / 2**20
  except Exception:  # not every backend reports it
    return None


def timed(f: Callable[[], Any]) -> float:
  """Seconds of one blocking call."""
  t0 = time.perf_counter()
  jax.block_until_ready(f())
  return time.perf_counter() - t0


def run_rounds(benches: list[Bench], reps: int, lead_in: bool = False) -> None:
  """One warm-up call each (not timed), then `reps` round-robin rounds of every bench.

  lead_in: each timed call right after an untimed one of the same bench, as in a training
  loop; the untimed call also absorbs the previous bench's wake (torch's OpenMP threads spin
  after a call and slow the next JAX call on 2 cores by up to several ms).
  """
  for bench in benches:
    jax.block_until_ready((bench.call(), bench.fwd and bench.fwd()))
  for _ in range(reps):
    for bench in benches:
      if lead_in:
        jax.block_until_ready(bench.call())
      bench.times.append(timed(bench.call))
      if bench.fwd is not None:
        bench.fwd_times.append(timed(bench.fwd))


def tokens_per_s(size: Size, times: list[float]) -> float:
  """B*T tokens over the median time."""
  return size[0] * size[1] / statistics.median(times)


def ratios(size: Size, benches: list[Bench], bench: Bench, refs: tuple[str, ...]) -> list[str]:
  """`bench`'s speed over each reference's (blank where that reference was not run)."""
  tps = {bn.label: tokens_per_s(size, bn.times) for bn in benches}
  return [f"{tps[bench.label] / tps[ref]:.2f}" if ref in tps else "" for ref in refs]


def size_label(size: Size) -> str:
  """'B32 T128 F64 H128', with ' L2' for a stack of layers."""
  layers = f" L{size[4]}" if len(size) > 4 and size[4] > 1 else ""
  return "B{} T{} F{} H{}".format(*size[:4]) + layers


def mem_text(bench: Bench) -> str:
  return "" if bench.mem_mb is None else f"{bench.mem_mb:.1f}"


def finite(value: float | None) -> bool:
  return value is not None and math.isfinite(value)


def engine_name(engine: str) -> str:
  """`auto` resolved to the strategy it picks on this backend, e.g. `auto=vjp`."""
  if engine != "auto":
    return engine
  how = strategy("auto")
  return "auto=" + ("vjp" if how.custom_vjp else "scan") + ("_hoisted" if how.hoist else "")


def ours_variants(engines: list[str], remat: bool, models: list[dict[str, Any]]
                  ) -> list[tuple[str, dict[str, Any]]]:
  """(label, config.model overrides) of every `ours` row: each engine, remat, each --model."""
  variants = [(engine_name(e), {"engine": e, "remat": False}) for e in engines]
  if remat:
    variants.append(("remat", {"engine": "auto", "remat": True}))
  for overrides in models:
    label = ",".join(f"{k}={v}" for k, v in overrides.items())
    variants.append((label, {"engine": "auto", "remat": False, **overrides}))
  return variants


def machine() -> str:
  """One line: backend, versions, CPU model, core count."""
  cpu = platform.processor() or "?"
  try:
    with open("/proc/cpuinfo") as fh:
      cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  tv = torch.__version__ if torch is not None else "not installed"
  return (f"backend={jax.default_backend()} jax={jax.__version__} flax={flax.__version__} "
          f"torch={tv} cpu={cpu} cpu_count={os.cpu_count()}")


def markdown_row(cells: list[str]) -> str:
  return "| " + " | ".join(cells) + " |"
