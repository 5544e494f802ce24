#!/usr/bin/env python
"""Speed of one recurrent layer: ours vs Flax NNX vs PyTorch vs a bare-matmul lower bound.

  python scripts/benchmark.py --sizes=small                 # smoke run, ~20 s
  python scripts/benchmark.py                               # the four default sizes
  python scripts/benchmark.py --cells=lstm --sizes='64,256,128,256' --engines=scan,vjp --remat
  python scripts/benchmark.py --cells=lstm --impls=ours --model='norm=layer;vertical_skip=dense'

Prints a markdown table per (cell, size): fwd+bwd and forward tokens/s (tokens = B*T), the
first-call compile seconds (fwd+bwd / fwd, trace + compile + first run), the fwd+bwd time, the
compiled fwd+bwd peak memory (XLA's memory_analysis: arguments + outputs + temporaries) and
fwd+bwd speed ratios against flax, torch and the bound. fwd+bwd = grad of sum(y**2) w.r.t. all
parameters and the input x. Timings are medians of `--reps` rounds in which every
implementation runs once, round-robin, so machine noise hits all alike.
"""
from __future__ import annotations

import argparse
import ast
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

try:
  import rnn_research  # noqa: F401
except ImportError:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_research.core.engine import strategy
from rnn_research.core.models import build

try:
  import torch
except ImportError:  # torch rows are skipped with a note
  torch = None

Size = tuple[int, int, int, int]
SIZES: dict[str, list[Size]] = {
    "small": [(8, 32, 16, 32)],
    "default": [(32, 128, 64, 128), (64, 256, 128, 256), (16, 1024, 32, 128),
                (32, 128, 256, 512)],
}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
FLAX_CELLS = {"rnn": "SimpleCell", "lstm": "OptimizedLSTMCell", "gru": "GRUCell"}
TORCH_CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
COLUMNS = ["cell", "size", "impl", "fwd+bwd tok/s", "fwd tok/s", "compile s (fb/fwd)",
           "fwd+bwd ms", "mem MB", "vs flax", "vs torch", "vs bound"]


@dataclass
class Bench:
  """One implementation at one (cell, size): two blocking closures and their timings."""

  label: str
  fb: Callable[[], Any]
  fwd: Callable[[], Any]
  compile_s: str = ""
  mem_mb: float | None = None
  fb_times: list[float] = field(default_factory=list)
  fwd_times: list[float] = field(default_factory=list)


def compile_call(f: Callable, *args: Any) -> tuple[Callable[[], Any], float, Any]:
  """AOT-compile `f` for `args`, run it once; (blocking closure, seconds to first result, mem)."""
  t0 = time.perf_counter()
  compiled = jax.jit(f).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  seconds = time.perf_counter() - t0
  return (lambda: compiled(*args)), seconds, compiled


def memory_mb(compiled: Any) -> float | None:
  """Arguments + outputs + temporaries of a compiled executable, in MB (None if unknown)."""
  try:
    m = compiled.memory_analysis()
    total = (m.temp_size_in_bytes + m.output_size_in_bytes + m.argument_size_in_bytes
             - m.alias_size_in_bytes)
    return total / 2**20
  except Exception:  # not every backend reports it
    return None


def jax_bench(label: str, forward: Callable, params: Any, x: jax.Array, *rest: Any) -> Bench:
  """Bench of a pure `forward(params, x, *rest) -> y`; fwd+bwd is grad w.r.t. (params, x)."""
  def loss(params, x, *rest):
    return jnp.sum(forward(params, x, *rest) ** 2)

  fb, fb_s, fb_compiled = compile_call(jax.grad(loss, argnums=(0, 1)), params, x, *rest)
  fwd, fwd_s, _ = compile_call(forward, params, x, *rest)
  return Bench(label, fb, fwd, f"{fb_s:.2f}/{fwd_s:.2f}", memory_mb(fb_compiled))


def nnx_bench(label: str, module: nnx.Module, x: jax.Array, **kwargs: Callable[[], Any]) -> Bench:
  """Bench of module(x, **{k: make() ...}), made pure with nnx.split / nnx.merge."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  params, rest = params.to_pure_dict(), rest.to_pure_dict()  # running norm stats mutate in rest

  def forward(params, x, rest):
    return nnx.merge(graphdef, params, rest)(x, **{k: make() for k, make in kwargs.items()})

  return jax_bench(label, forward, params, x, rest)


def engine_name(engine: str) -> str:
  """`auto` resolved to the strategy it picks on this backend, e.g. `auto=vjp`."""
  if engine != "auto":
    return engine
  how = strategy("auto")
  return "auto=" + ("vjp" if how.custom_vjp else "scan") + ("_hoisted" if how.hoist else "")


def ours(cell: str, size: Size, x: jax.Array, engine: str, remat: bool = False,
         overrides: dict[str, Any] | None = None) -> Bench:
  """rnn_research's stack (one layer unless `overrides` say otherwise), no readout; `key`
  feeds dropout where an override sets a rate."""
  _, _, f, h = size
  model = build(dict(cell=cell, hidden_size=h, engine=engine, remat=remat, **(overrides or {})),
                in_features=f, out_features=None, rngs=nnx.Rngs(0))
  label = "remat" if remat else engine_name(engine)
  if overrides:
    label = ",".join(f"{k}={v}" for k, v in overrides.items())
  return nnx_bench(f"ours[{label}]", model, x, key=lambda: jax.random.PRNGKey(0))


def parse_model(text: str) -> list[dict[str, Any]]:
  """'norm=layer,num_layers=2;vertical_skip=dense' -> one config.model override dict each."""
  sets = []
  for part in filter(None, text.split(";")):
    overrides = {}
    for item in part.split(","):
      key, _, value = item.partition("=")
      try:
        overrides[key.strip()] = ast.literal_eval(value.strip())
      except (ValueError, SyntaxError):
        overrides[key.strip()] = value.strip()
    sets.append(overrides)
  return sets


def flax_nnx(cell: str, size: Size, x: jax.Array) -> Bench:
  """flax.nnx.RNN around Flax's own cell; a fresh carry-init RNG stream inside the trace
  (the module's own stream cannot be advanced under jit(grad(...)): TraceContextError)."""
  _, _, f, h = size
  module = nnx.RNN(getattr(nnx, FLAX_CELLS[cell])(in_features=f, hidden_features=h,
                                                  rngs=nnx.Rngs(0)), rngs=False)
  return nnx_bench("flax", module, x, rngs=lambda: nnx.Rngs(carry=0))


def bound(cell: str, size: Size, x: jax.Array) -> Bench:
  """Lower bound: one input GEMM plus a scan of bare [B, H] @ [H, G*H] matmuls."""
  _, _, f, h = size
  g = GATES[cell]
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {"w_x": jax.random.normal(k1, (f, g * h)) / np.sqrt(f),
            "w_h": 0.5 * jax.random.normal(k2, (h, g * h)) / np.sqrt(h)}  # keeps the state O(1)

  def forward(p, x):
    b, t, _ = x.shape
    zx = (jnp.swapaxes(x, 0, 1).reshape(t * b, f) @ p["w_x"]).reshape(t, b, g * h)

    def step(z, zx_t):
      z = zx_t + z[:, :h] @ p["w_h"]
      return z, z[:, :h]

    _, ys = jax.lax.scan(step, jnp.zeros((b, g * h), x.dtype), zx)
    return ys

  return jax_bench("bound", forward, params, x)


def torch_bench(cell: str, size: Size, x_np: np.ndarray) -> Bench:
  """torch.nn.LSTM / GRU / RNN, batch_first, 2 threads; grads of parameters and x."""
  _, _, f, h = size
  torch.manual_seed(0)
  module = getattr(torch.nn, TORCH_CELLS[cell])(f, h, batch_first=True)
  x = torch.from_numpy(x_np).requires_grad_(True)

  def fb() -> None:
    module.zero_grad(set_to_none=True)
    x.grad = None
    y, _ = module(x)
    (y ** 2).sum().backward()

  def fwd() -> None:
    with torch.no_grad():
      module(x)

  bench = Bench("torch", fb, fwd)
  fb(), fwd()  # warm-up
  return bench


def make_benches(cell: str, size: Size, args: argparse.Namespace) -> list[Bench]:
  """Every requested implementation at (cell, size), compiled and warmed up."""
  b, t, f, _ = size
  x_np = np.random.default_rng(0).standard_normal((b, t, f), dtype=np.float32)
  x = jnp.asarray(x_np)
  benches = []
  if "ours" in args.impls:
    benches += [ours(cell, size, x, engine) for engine in args.engines]
    if args.remat:
      benches.append(ours(cell, size, x, "auto", remat=True))
    benches += [ours(cell, size, x, "auto", overrides=o) for o in args.model]
  if "flax" in args.impls:
    benches.append(flax_nnx(cell, size, x))
  if "torch" in args.impls and torch is not None:
    benches.append(torch_bench(cell, size, x_np))
  if "bound" in args.impls:
    benches.append(bound(cell, size, x))
  for bench in benches:  # one more warm-up call each
    jax.block_until_ready((bench.fb(), bench.fwd()))
  return benches


def timed(f: Callable[[], Any]) -> float:
  """Seconds of one blocking call."""
  t0 = time.perf_counter()
  jax.block_until_ready(f())
  return time.perf_counter() - t0


def run_rounds(benches: list[Bench], reps: int) -> None:
  """`reps` round-robin rounds; each runs every bench's fwd+bwd and forward once."""
  for _ in range(reps):
    for bench in benches:
      bench.fb_times.append(timed(bench.fb))
      bench.fwd_times.append(timed(bench.fwd))


def rows(cell: str, size: Size, benches: list[Bench]) -> list[list[str]]:
  """Table rows of one (cell, size), with fwd+bwd speed ratios against the references."""
  tokens = size[0] * size[1]
  fb_tps = {bn.label: tokens / statistics.median(bn.fb_times) for bn in benches}
  label = "B{} T{} F{} H{}".format(*size)
  out = []
  for bn in benches:
    ratios = [f"{fb_tps[bn.label] / fb_tps[ref]:.2f}" if ref in fb_tps else ""
              for ref in ("flax", "torch", "bound")]
    mem = "" if bn.mem_mb is None else f"{bn.mem_mb:.1f}"
    out.append([cell, label, bn.label, f"{fb_tps[bn.label]:,.0f}",
                f"{tokens / statistics.median(bn.fwd_times):,.0f}", bn.compile_s,
                f"{1e3 * statistics.median(bn.fb_times):.2f}", mem, *ratios])
  return out


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


def parse_sizes(text: str) -> list[Size]:
  """`small`, `default`, or explicit `B,T,F,H;B,T,F,H`."""
  if text in SIZES:
    return SIZES[text]
  sizes = [tuple(int(v) for v in part.split(",")) for part in text.split(";") if part.strip()]
  if not sizes or any(len(s) != 4 for s in sizes):
    raise argparse.ArgumentTypeError(f"--sizes wants small, default or B,T,F,H;..., got {text!r}")
  return sizes  # type: ignore[return-value]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """Command-line flags."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  csv = lambda s: [v.strip() for v in s.split(",") if v.strip()]  # noqa: E731
  p.add_argument("--sizes", type=parse_sizes, default="default",
                 help="small | default | 'B,T,F,H;B,T,F,H'")
  p.add_argument("--cells", type=csv, default="rnn,lstm,gru")
  p.add_argument("--engines", type=csv, default="auto",
                 help="comma list of engines for `ours` rows, e.g. scan,vjp,vjp_hoisted")
  p.add_argument("--impls", type=csv, default="ours,flax,torch,bound")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--remat", action="store_true", help="add ours[remat] rows (engine auto)")
  p.add_argument("--model", type=parse_model, default="",
                 help="extra ours rows with config.model overrides, e.g. "
                      "'num_layers=2;num_layers=2,norm=layer' (engine auto)")
  p.add_argument("--torch-threads", type=int, default=2,
                 help="torch.set_num_threads; with 2 threads on a loaded 2-core machine "
                      "torch's OpenMP barriers can stall for ~0.5 s per call")
  args = p.parse_args(argv)
  bad = [c for c in args.cells if c not in GATES] + [
      i for i in args.impls if i not in ("ours", "flax", "torch", "bound")]
  if bad:
    p.error(f"unknown cell(s)/impl(s): {bad}")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  if torch is not None:
    torch.set_num_threads(args.torch_threads)
  print(machine() + (f" torch_threads={args.torch_threads}" if torch is not None else ""))
  if "torch" in args.impls and torch is None:
    print("note: torch is not importable; torch rows skipped")
  print(f"reps={args.reps} (median), loss=sum(y**2), fwd+bwd = grad w.r.t. params and x\n")
  print("| " + " | ".join(COLUMNS) + " |")
  print("|" + "---|" * len(COLUMNS), flush=True)
  for cell in args.cells:
    for size in args.sizes:
      benches = make_benches(cell, size, args)
      run_rounds(benches, args.reps)
      for row in rows(cell, size, benches):
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
  main()
