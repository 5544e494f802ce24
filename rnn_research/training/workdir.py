"""A run's directory: its resolved `config.json`, and the refusal to mix two configs in one.

Resuming needs the same config (only `train.steps` may change, to extend a run). Another
config in a workdir that already holds a run is refused unless `overwrite`, which moves the
old run to the sibling `<workdir>.replaced-<time>/` rather than deleting it: nothing is lost,
and the old run stays out of the new run's TensorBoard tree. `finished` tells a run that is
already complete (it is not trained, nor any of its files rewritten, again).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

from absl import logging

from rnn_research.training import atomic
from rnn_research.training.lock import LOCK_FILE
from rnn_research.training.status import read_status

CONFIG_FILE = "config.json"
_MAY_CHANGE = (("train", "steps"),)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
  config = json.loads(json.dumps(config))
  for section, key in _MAY_CHANGE:
    config.get(section, {}).pop(key, None)
  return config


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """A nested config dict as {"model.cell": ..., "train.seed": ...} (dotted keys)."""
  out = {}
  for key, value in config.items():
    if isinstance(value, dict):
      out.update(flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
  """`key: old -> new` for every dotted key whose value differs between two nested dicts."""
  keys = sorted(set(old) | set(new))
  out = []
  for key in keys:
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return out


def replaced_dir(directory: str) -> str:
  """A new sibling `<directory>.replaced-<YYYYmmdd-HHMMSS>[-k]` to move old runs into (outside
  the directory's TensorBoard tree); not created yet."""
  base = f"{os.path.normpath(directory)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
  target, k = base, 1
  while os.path.exists(target):
    target, k = f"{base}-{k}", k + 1
  return target


def _move_aside(workdir: str) -> str:
  """Moves everything in `workdir` but its lock to `replaced_dir(workdir)`; returns it."""
  backup = replaced_dir(workdir)
  os.makedirs(backup)
  for name in os.listdir(workdir):
    if name != LOCK_FILE:
      shutil.move(os.path.join(workdir, name), backup)
  return backup


def prepare(workdir: str, config: dict[str, Any], overwrite: bool = False) -> None:
  """Create `workdir` and write `config.json`; refuse a different config unless `overwrite`."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    changed = differences(_comparable(old), _comparable(config))
    if changed and not overwrite:
      raise ValueError(
          f"{workdir} holds a run of a different config ({'; '.join(changed[:5])}"
          f"{' ...' if len(changed) > 5 else ''}); use another --workdir, or --overwrite to "
          "move the old run aside and start afresh")
    if changed:
      backup = _move_aside(workdir)
      logging.warning("--overwrite: moved the old run in %s to %s", workdir, backup)
  atomic.write_json(path, config, sort_keys=True)


def finished(workdir: str, config: dict[str, Any]) -> dict[str, Any] | None:
  """The status of the run in `workdir` if it is `completed` at `train.steps` of this very
  `config` (config.json equal to it), else None. Reads only; its checkpoints are not needed."""
  try:
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
      old = json.load(f)
  except (OSError, ValueError):
    return None
  status = read_status(workdir)
  if (differences(old, json.loads(json.dumps(config))) or status.get("state") != "completed"
      or status.get("step") != config["train"]["steps"]):
    return None
  return status
