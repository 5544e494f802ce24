#!/usr/bin/env python
"""Speed of ours vs Flax NNX vs PyTorch: the training step (default) or one layer.

  python scripts/benchmark.py --sizes=small                 # smoke run of the training step
  python scripts/benchmark.py                               # the default sizes + a 2-layer row
  python scripts/benchmark.py --workload=layer              # one layer, grads of params and x
  python scripts/benchmark.py --cells=lstm --sizes='64,256,128,256' --engines=scan,vjp --remat
  python scripts/benchmark.py --cells=lstm --impls=ours --model='norm=layer;vertical_skip=dense'
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python scripts/benchmark.py --data-parallel

--workload=train (benchmark_train.py): one jitted optimiser step (model + Linear(H, 1)
readout, regression MSE, adam), gradients of the parameters only: ms per step, tokens/s
(tokens = B*T), speed ratios against flax and torch, first-call compile seconds, XLA's
compiled memory (arguments + outputs + temporaries) and the first step's loss. A named size
set adds a 2-layer row of its first size (L = 2 for all three implementations).

--workload=layer (benchmark_layer.py): one layer, no readout; fwd+bwd = grad of sum(y**2)
w.r.t. all parameters and the input x, and the forward alone; against flax, torch and a
bare-matmul lower bound.

Timings are medians of `--reps` rounds in which every implementation runs once, round-robin,
after one warm-up call each, so machine noise hits all alike; in the train workload each timed
step follows an untimed step of its own, as in a training loop.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import os
import sys
from typing import Any

try:
  import rnn_research  # noqa: F401
except ImportError:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

import benchmark_layer
import benchmark_train
from benchmark_harness import Size, machine, markdown_row, ours_variants, run_rounds, torch

WORKLOADS = {"train": benchmark_train, "layer": benchmark_layer}
IMPLS = {"train": ("ours", "flax", "torch"), "layer": ("ours", "flax", "torch", "bound")}
SIZES: dict[str, list[Size]] = {
    "small": [(8, 32, 16, 32)],
    "default": [(32, 128, 64, 128), (64, 256, 128, 256), (16, 1024, 32, 128),
                (32, 128, 256, 512)],
}
# GPU: the defaults, a large one and a long sequence (scripts/gpu_check.sh)
SIZES["gpu"] = SIZES["default"] + [(64, 512, 128, 1024), (16, 4096, 64, 256)]


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


def parse_sizes(text: str, workload: str) -> list[Size]:
  """`small`, `default` (train: plus a 2-layer row of the first size), or explicit
  `B,T,F,H[,L];...`."""
  if text in SIZES:
    sizes = SIZES[text]
    return sizes + [sizes[0] + (2,)] if workload == "train" else sizes
  sizes = [tuple(int(v) for v in part.split(",")) for part in text.split(";") if part.strip()]
  if not sizes or any(len(s) not in (4, 5) for s in sizes):
    raise ValueError(f"--sizes wants {', '.join(SIZES)} or B,T,F,H[,L];..., got {text!r}")
  return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """Command-line flags."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  csv = lambda s: [v.strip() for v in s.split(",") if v.strip()]  # noqa: E731
  p.add_argument("--workload", choices=tuple(WORKLOADS), default="train")
  p.add_argument("--sizes", default="default",
                 help="small | default | gpu | 'B,T,F,H[,L];...'")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="train workload: the compute dtype of all three (params stay float32)")
  p.add_argument("--cells", type=csv, default="rnn,lstm,gru")
  p.add_argument("--engines", type=csv, default="auto",
                 help="comma list of engines for `ours` rows, e.g. scan,vjp,vjp_hoisted")
  p.add_argument("--impls", type=csv, default=None,
                 help="train: ours,flax,torch (default); layer: also bound")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--remat", action="store_true", help="add ours[remat] rows (engine auto)")
  p.add_argument("--model", type=parse_model, default="",
                 help="extra ours rows with config.model overrides, e.g. "
                      "'num_layers=2;num_layers=2,norm=layer' (engine auto)")
  p.add_argument("--data-parallel", action="store_true",
                 help="train: add an ours row whose batch is split over all devices, as "
                      "train.data_parallel trains (on CPU set XLA_FLAGS="
                      "--xla_force_host_platform_device_count=N first)")
  p.add_argument("--torch-threads", type=int, default=2,
                 help="torch.set_num_threads; with 2 threads on a loaded 2-core machine "
                      "torch's OpenMP barriers can stall for ~0.5 s per call")
  args = p.parse_args(argv)
  valid = IMPLS[args.workload]
  args.impls = args.impls or list(valid)
  bad = [c for c in args.cells if c not in benchmark_layer.GATES] + [
      i for i in args.impls if i not in valid]
  if bad:
    p.error(f"unknown cell(s)/impl(s) for --workload={args.workload}: {bad}; valid cells: "
            f"{', '.join(benchmark_layer.GATES)}; impls: {', '.join(valid)}")
  try:
    args.sizes = parse_sizes(args.sizes, args.workload)
  except ValueError as err:
    p.error(str(err))
  if args.workload == "layer" and any(len(s) > 4 for s in args.sizes):
    p.error("--workload=layer times one layer: sizes are B,T,F,H")
  if args.workload == "layer" and (args.dtype != "float32" or args.data_parallel):
    p.error("--dtype and --data-parallel apply to --workload=train")
  if args.data_parallel and jax.device_count() < 2:
    p.error(f"--data-parallel needs 2 or more devices; {jax.default_backend()} has "
            f"{jax.device_count()} (on CPU set XLA_FLAGS="
            f"--xla_force_host_platform_device_count=2)")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  workload = WORKLOADS[args.workload]
  if torch is not None:
    torch.set_num_threads(args.torch_threads)
  print(machine() + (f" torch_threads={args.torch_threads}" if torch is not None else ""))
  print(f"date={datetime.date.today().isoformat()} workload={args.workload} dtype={args.dtype}")
  if "torch" in args.impls and torch is None:
    print("note: torch is not importable; torch rows skipped")
  print(f"reps={args.reps} (median), {workload.HEADER}\n")
  print(markdown_row(workload.COLUMNS))
  print("|" + "---|" * len(workload.COLUMNS), flush=True)
  variants = ours_variants(args.engines, args.remat, args.model)
  notes = []
  for cell in args.cells:
    for size in args.sizes:
      extra = ({"dtype": args.dtype, "data_parallel": args.data_parallel}
               if args.workload == "train" else {})
      benches = workload.make_benches(cell, size, args.impls, variants, **extra)
      run_rounds(benches, args.reps, lead_in=args.workload == "train")
      print("\n".join(workload.rows(cell, size, benches)), flush=True)
      if args.workload == "train":
        notes.append(benchmark_train.loss_warning(cell, size, benches))
  print("\n".join(n for n in notes if n))


if __name__ == "__main__":
  main()
