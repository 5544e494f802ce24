#!/usr/bin/env python
"""Whether a code change alters what any report run computes: hashes of the runs' programs.

  python scripts/program_hashes.py --out=/tmp/before.json                 # at one commit
  python scripts/program_hashes.py --out=/tmp/after.json --compare=/tmp/before.json

For every distinct config of the report's sweeps (members that differ only in their seed
count once), it builds the run as the trainer does (`train.init_state`) and hashes, as 16 hex
digits of sha256, what decides the run's numbers besides the seed: the lowered StableHLO (no
source locations) of the jitted train step, of the eval-mode predict (not for truncated-BPTT
configs, whose predict runs in windows), and of the gradient-flow probe where the model has
one; and the bytes of the first training batch and the first eval batch. Nothing is compiled
or trained: the whole report takes a minute or two.

Identical hashes at two commits mean every report run would compute the same numbers at both
(same jax and XLA), unless the change alters only later batches or the host-side evaluation
(numpy metrics), which are not hashed; a cold rerun of the report confirms it bit for bit. A
changed hash names the configs whose runs would change. The code fingerprint that decides staleness
(docs/reporting.md) is a hash of source files instead, so it also moves for changes that alter
no program.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from typing import Any

# This checkout's code, not an installed copy: comparing two checkouts is the point.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
from absl import logging

import rnn_research
from rnn_research.experiments import sweep_spec
from rnn_research.experiments.report_sections import SECTIONS
from rnn_research.training import diagnostics, tbptt, train


def digest(data: str | bytes) -> str:
  return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def batch_digest(batch: dict[str, Any]) -> str:
  """One hash of a batch's arrays (keys, dtypes, shapes and bytes)."""
  return digest(b"".join(f"{k}{v.dtype}{v.shape}".encode() + np.ascontiguousarray(v).tobytes()
                         for k, v in sorted(batch.items()) if v is not None))


def hashes(config: Any) -> dict[str, str]:
  """The hashes of one member config's programs and first batches."""
  task, graphdef, state, optimizer = train.init_state(config)
  window = config.train.get("tbptt_window", 0)
  batch = tbptt.train_batch(task, 0, window)
  step = jax.jit(train.train_step_fn(graphdef, task, optimizer))
  rate = np.float32(config.train.learning_rate)
  evals = task.eval_batches()[0]
  out = {"step": digest(step.lower(state, batch, np.uint32(0), rate).as_text()),
         "train_batch": batch_digest(batch), "eval_batch": batch_digest(evals)}
  if not window:
    predict = train.make_predict(graphdef, state)
    out["predict"] = digest(predict.lower(state["params"], state["rest"], evals["x"],
                                          evals["mask"], evals.get("resets")).as_text())
  flow = diagnostics.gradient_flow_probe(graphdef, state, task.loss)
  if flow is not None:
    probe = {k: v[:config.train.batch_size] for k, v in evals.items()}
    out["flow"] = digest(flow.lower(state["params"], state["rest"], probe).as_text())
  return out


def report_hashes(only: str | None) -> dict[str, dict[str, str]]:
  """{'<sweep file> <config as JSON, seed left out>': hashes} over the report's sweeps."""
  result: dict[str, dict[str, str]] = {}
  for config_arg in dict.fromkeys(s.config for s in SECTIONS):
    if only and not re.search(only, config_arg):
      continue
    swp = sweep_spec.load(config_arg)
    for i in range(len(swp.members)):
      config = swp.config(i)
      key = f"{config_arg} {json.dumps(train._comparable(config), sort_keys=True, default=str)}"
      if key not in result:
        result[key] = hashes(config)
  return result


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="where to write the hashes (JSON)")
  p.add_argument("--compare", help="hashes written at another commit: print what differs")
  p.add_argument("--only", help="regex: only the sweep files it matches")
  args = p.parse_args(argv)
  logging.set_verbosity(logging.ERROR)  # the probes' "not measured" warnings
  mine = report_hashes(args.only)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(mine, f, indent=1, sort_keys=True)
  print(f"{len(mine)} distinct report configs of {rnn_research.__file__} hashed into {args.out}")
  if args.compare:
    with open(args.compare, encoding="utf-8") as f:
      theirs = json.load(f)
    changed = {k: [n for n in sorted(set(v) | set(theirs.get(k, {})))
                   if v.get(n) != theirs.get(k, {}).get(n)] for k, v in mine.items()}
    changed = {k: v for k, v in changed.items() if v}
    only_one = set(mine) ^ (set(theirs) if not args.only else
                            {k for k in theirs if re.search(args.only, k.split(" ", 1)[0])})
    print(f"against {args.compare}: {len(changed)} configs with a changed hash, "
          f"{len(only_one)} in one file only")
    for key, names in sorted(changed.items()):
      print(f"  {', '.join(names)}: {key[:160]}")
    if changed or only_one:
      sys.exit(1)


if __name__ == "__main__":
  main()
