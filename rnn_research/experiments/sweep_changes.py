"""Members whose runs on disk are out of date, and moving their old runs aside.

A member's directory holds the `config.json` its run was trained with. When the sweep file
(or a `--config.<key>=<value>` override) now gives that member another config, its results
on disk are stale: rerunning the sweep must neither skip it as done nor resume it. `changed`
finds such members (only `train.steps` may differ, as when `main` extends a run). `stale`
finds the members whose run trained under other code than there is now (stale_runs.py).
`move_aside` moves their directories out of the sweep, to a sibling directory
`<sweep dir>.replaced-<YYYYmmdd-HHMMSS>/<member name>` outside its TensorBoard tree; nothing is
deleted. No jax here.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

from rnn_research.experiments import stale_runs, sweep_spec
from rnn_research.training import lock
from rnn_research.training import workdir as run_dir
from rnn_research.training.status import read_status, status_path

MAY_CHANGE = ("train.steps",)  # main resumes a run under a new train.steps (to extend it)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
  config = json.loads(json.dumps(config))  # what config.json holds: JSON types
  for key in MAY_CHANGE:
    section, leaf = key.rsplit(".", 1)
    config.get(section, {}).pop(leaf, None)
  return config


def stored_config(member_dir: str) -> dict[str, Any] | None:
  """The config.json of a member's run, or None where it has none (never ran)."""
  try:
    with open(os.path.join(member_dir, run_dir.CONFIG_FILE)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except json.JSONDecodeError:
    return {}  # unreadable: differs from every config


def changed(swp: sweep_spec.Sweep, workdir: str, indices: list[int]) -> dict[int, list[str]]:
  """{member index: ["key: old -> new", ...]} for each member in `indices` whose run on disk
  was trained with another config than the one the sweep gives it now."""
  out = {}
  for i in indices:
    old = stored_config(os.path.join(workdir, swp.names[i]))
    if old is None:
      continue
    diff = run_dir.differences(_comparable(old), _comparable(swp.config(i).to_dict()))
    if diff:
      out[i] = diff
  return out


def describe(swp: sweep_spec.Sweep, workdir: str, diffs: dict[int, list[str]]) -> str:
  """The error that stops a sweep with changed members: each member and its changed keys."""
  lines = [f"{swp.names[i]}: {'; '.join(d[:6])}{' ...' if len(d) > 6 else ''}"
           for i, d in diffs.items()]
  return (f"{len(diffs)} member(s) in {workdir} ran with another config than {swp.config_arg} "
          f"now gives them (old -> new), so their results are stale:\n  " + "\n  ".join(lines)
          + f"\nrerun with --rerun_changed to move their runs aside to "
          f"{os.path.normpath(workdir)}.replaced-<time>/ and train them afresh, or restore the "
          "sweep file")


def stale(swp: sweep_spec.Sweep, workdir: str, indices: list[int], code: str
          ) -> dict[int, str]:
  """{member index: the commits its run trained at} for each member in `indices` whose run on
  disk did not train under the fingerprint `code` only (stale_runs.is_stale)."""
  out = {}
  for i in indices:
    member_dir = os.path.join(workdir, swp.names[i])
    if os.path.isfile(status_path(member_dir)):
      status = read_status(member_dir)
      if stale_runs.is_stale(status, code):
        out[i] = stale_runs.commits([status])
  return out


def describe_stale(swp: sweep_spec.Sweep, workdir: str, old: dict[int, str], code: str) -> str:
  """The error that stops a sweep with stale members: each member and its commits."""
  lines = [f"{swp.names[i]}: trained at {commits}" for i, commits in old.items()]
  return (f"{len(old)} member(s) in {workdir} trained under other code than rnn_research/core, "
          f"tasks and training hold now (fingerprint {code}), or recorded none, so their "
          "results may not be what the code gives now:\n  " + "\n  ".join(lines)
          + f"\nrerun with --rerun_stale to move their runs aside to "
          f"{os.path.normpath(workdir)}.replaced-<time>/ and train them afresh, or with "
          "--allow_stale to keep them (finished ones are skipped, the others resume under the "
          "code there is now)")


def move_aside(workdir: str, names: list[str]) -> str:
  """Moves each member's run directory (and its sweep log) to a new sibling of the sweep,
  `run_dir.replaced_dir(workdir)`;
  returns that directory. A run that a live process holds (training it) raises
  `lock.WorkdirBusy` (a ValueError) before anything moves."""
  for name in names:
    lock.check_free(os.path.join(workdir, name))
  target = run_dir.replaced_dir(workdir)
  os.makedirs(target)
  for name in names:
    shutil.move(os.path.join(workdir, name), os.path.join(target, name))
    log = os.path.join(workdir, "logs", f"{name}.log")
    if os.path.exists(log):
      os.makedirs(os.path.join(target, "logs"), exist_ok=True)
      shutil.move(log, os.path.join(target, "logs", f"{name}.log"))
  return target
