"""A run's status file: `workdir/status.json`, merged and replaced atomically.

The trainer records where a run stands (`state`, step, last metrics, error text) and the
sweep and `compare` read it without importing jax. Every write is atomic (`atomic.write_json`),
so a reader sees either the old or the new file, never a half-written one, even if the writer
is killed mid-write.

  write_status(workdir, state="running", step=0)
  write_status(workdir, step=100, train_loss=0.31)   # merged into the fields above
  read_status(workdir)  # {"state": "running", "step": 100, "train_loss": 0.31}

When a run starts or resumes training, `code` and `commits` list every code fingerprint and
git commit it has trained under (provenance.py), in order: the report calls a run stale
unless `code` is exactly [the current fingerprint].
"""

from __future__ import annotations

import json
import os
from typing import Any

from rnn_research.training import atomic

STATUS_FILE = "status.json"
# Every value `state` may take; anything else raises ValueError.
STATES: tuple[str, ...] = ("running", "completed", "diverged", "failed", "preempted")


def status_path(workdir: str) -> str:
  """Path of the status file of the run in `workdir`."""
  return os.path.join(workdir, STATUS_FILE)


def read_status(workdir: str) -> dict[str, Any]:
  """Returns the fields of `workdir/status.json`, or {} if there is none yet."""
  try:
    with open(status_path(workdir), encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def validate_state(state: Any) -> str:
  """Returns `state` if it is one of STATES, else raises ValueError naming them."""
  if state not in STATES:
    raise ValueError(f"invalid run state {state!r}; valid states: {', '.join(STATES)}")
  return state


def write_status(workdir: str, **fields: Any) -> dict[str, Any]:
  """Merges `fields` into `workdir/status.json` atomically; returns the merged dict.

  Values must be JSON-serialisable (numpy/jax scalars: convert with float()/int()
  first). `state`, when given, must be one of STATES.
  """
  if "state" in fields:
    validate_state(fields["state"])
  merged = {**read_status(workdir), **fields}
  atomic.write_json(status_path(workdir), merged, sort_keys=True)
  return merged


def trained_under(workdir: str, code: str, commit: str | None) -> dict[str, list[str]]:
  """`code` and `commits` of the run in `workdir` with `code` and `commit` appended where
  they are new (a None commit, outside a git checkout, is left out): write them on (re)start."""
  old = read_status(workdir)
  out = {}
  for field, value in (("code", code), ("commits", commit)):
    values = list(old.get(field) or [])
    out[field] = values + [value] if value is not None and value not in values else values
  return out
