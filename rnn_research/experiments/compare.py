"""Compares the runs of an ablation sweep (or one run): one ranked row per group, and their curves.

Reads each member's config.json, status.json and event files (never jax), so it works on a
sweep that is still running. Runs are grouped by `group_by`'s config keys, or else by their
sweep overrides except `train.seed` (seeds are what a group averages over). `report` writes
`<out>/compare.md` (the markdown tables) and `<out>/compare.png` (compare_plot.py). The metric
defaults to the sweep file's get_metric(), else the task's main metric (`Task.main_metric`, in
each run's status.json). Each group gets n, mean [95% CI], median and diverged/runs; against a
baseline (--baseline, else the sweep file's get_baseline(), both in sweep.json) Welch's
difference, Hedges' g, Holm-adjusted p and a verdict, and with a threshold Fisher's test of
the runs that reached it (stats.py). The command line is
`python -m rnn_research.compare` (rnn_research/compare.py).

A run's final value is the last logged value of the metric (a running run's latest one).
Diverged and failed runs stopped early: they give no final or best value and never count as
reaching the threshold, but are counted and drawn (thin, 'x' at their last point).
Under the tables: the commits the runs trained at, and how many of them are stale (trained
under other code than there is now; stale_runs.py).
"""
from __future__ import annotations

import collections
import datetime
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnn_research.experiments import baseline as baselines, importance as axis_importance, stats
from rnn_research.experiments import stale_runs, stats_table
from rnn_research.training import atomic, provenance, workdir as run_dir
from rnn_research.training.metric_writer import read_scalars
from rnn_research.training.status import read_status

SEED_KEY = baselines.SEED_KEY  # seeds are what a group averages over
STOPPED = ("diverged", "failed")  # states of runs that ended before their last step
STEPS_PER_SEC = "perf/steps_per_sec"
Series = list[tuple[int, float]]


@dataclass
class Run:
  """One member of a sweep, as found on disk."""
  name: str
  path: str
  config: dict[str, Any]
  status: dict[str, Any]
  scalars: dict[str, Series]

  @property
  def state(self) -> str:
    """The status' state; "running" for a run that has written none yet."""
    return self.status.get("state") or "running"


@dataclass
class Row:
  """One group's per-run values (of its runs that give one); the table shows their means."""
  group: str
  runs: int
  finals: list[float]
  bests: list[float]
  reach_steps: list[int]  # first step at the threshold, per run that reached it
  states: dict[str, int]
  steps_per_sec: float | None  # mean over runs of each run's mean perf/steps_per_sec


mean_std = stats_table.mean_std


def _read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def _is_run(path: str) -> bool:
  return any(os.path.isfile(os.path.join(path, f)) for f in ("config.json", "status.json"))


def load_runs(directory: str) -> list[Run]:
  """Every member run in `directory` (subdirectories with config.json or status.json), or
  the one run that `directory` is."""
  if not os.path.isdir(directory):
    raise ValueError(f"no directory {directory}")
  if _is_run(directory):
    found = [(os.path.basename(os.path.abspath(directory)), directory)]
  else:
    found = [(name, os.path.join(directory, name)) for name in sorted(os.listdir(directory))
             if not name.startswith((".", "replaced-")) and ".replaced-" not in name
             and _is_run(os.path.join(directory, name))]
  runs = [Run(name, path, _read_json(os.path.join(path, "config.json")) or {}, read_status(path),
              read_scalars(path)) for name, path in found]
  if not runs:
    raise ValueError(f"no run directories (with config.json or status.json) in {directory}")
  return runs


def default_metric(runs: list[Run]) -> tuple[str, str]:
  """The main metric (tag, "min" | "max") of the runs' task (`Task.main_metric`, which the
  trainer records in status.json); ("eval/loss", "min") when the runs name none or several."""
  named = {tuple(r.status["main_metric"]) for r in runs if r.status.get("main_metric")}
  return named.pop() if len(named) == 1 else ("eval/loss", "min")


def _fmt(value: Any) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  return f"{value:g}" if isinstance(value, float) else str(value)


def _names(keyed: dict[str, dict[str, Any]]) -> dict[str, str]:
  """Run name -> group name `key=value,...` (keys shortened to their last part if unique)."""
  keys = list(dict.fromkeys(k for values in keyed.values() for k in values))
  last = [k.rsplit(".", 1)[-1] for k in keys]
  short = {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}
  return {run: ",".join(f"{short[k]}={_fmt(v)}" for k, v in values.items()) or "base"
          for run, values in keyed.items()}


def _unknown_key(key: str, valid: set[str]) -> str:
  section = key.split(".")[0]
  inside = sorted(k for k in valid if k.startswith(section + "."))
  listed = f"valid {section}.* keys" if inside else "valid keys"
  return f"unknown --group_by key {key!r}; {listed}: {', '.join(inside or sorted(valid))}"


def group_runs(runs: list[Run], group_by: list[str] | None,
               sweep: dict[str, Any] | None) -> dict[str, list[Run]]:
  """Groups runs by the `group_by` config keys, else by the sweep file's get_group_by() (in
  sweep.json), else by their non-seed overrides."""
  group_by = group_by or (sweep or {}).get("group_by")
  flats = {r.name: run_dir.flat(r.config) for r in runs}
  overrides = {m["name"]: m.get("overrides", {}) for m in (sweep or {}).get("members", [])}
  if group_by:
    valid = set().union(*flats.values())
    for key in group_by:
      if key not in valid:
        raise ValueError(_unknown_key(key, valid))
    keyed = {r.name: {k: flats[r.name].get(k) for k in group_by} for r in runs}
  elif overrides and all(r.name in overrides for r in runs):
    keyed = {r.name: {k: v for k, v in overrides[r.name].items() if k != SEED_KEY} for r in runs}
  else:  # no sweep.json (or runs it does not list): the config keys that differ
    keys = sorted(k for k in set().union(*flats.values()) if k != SEED_KEY and len(
        {json.dumps(f.get(k), sort_keys=True) for f in flats.values()}) > 1)
    keyed = {r.name: {k: flats[r.name].get(k) for k in keys} for r in runs}
  names = _names(keyed)
  groups: dict[str, list[Run]] = {}
  for run in runs:
    groups.setdefault(names[run.name], []).append(run)
  return groups


def resolve_mode(metric: str, mode: str, main: tuple[str, str] | None = None) -> str:
  """"min" or "max"; "auto" is the task's for its main metric (`main`: (tag, mode)), else max
  for accuracies (a name with "accuracy" or an "acc" word)."""
  if mode == "auto":
    if main and main[0] == metric:
      return main[1]
    name = metric.lower()
    return "max" if "accuracy" in name or "acc" in re.split(r"[^a-z0-9]+", name) else "min"
  if mode not in ("min", "max"):
    raise ValueError(f"bad --mode {mode!r}; valid: auto, min, max")
  return mode


def finite_series(run: Run, tag: str) -> Series:
  """The finite (step, value) points `run` logged for `tag`."""
  return [(s, v) for s, v in run.scalars.get(tag, []) if math.isfinite(v)]


def first_runs(directory: str, group_by: list[str] | None = None) -> dict[str, Run | None]:
  """{group: its completed run with the lowest `train.seed` (ties: by name), or None} for the
  sweep in `directory`, grouped as `report` groups it: the run a report samples or plots."""
  sweep = _read_json(os.path.join(directory, "sweep.json")) or {}
  groups = group_runs(load_runs(directory), group_by, sweep)
  key = lambda r: (r.config.get("train", {}).get("seed", 0), r.name)
  return {g: min((r for r in runs if r.status.get("state") == "completed"), key=key, default=None)
          for g, runs in groups.items()}


def _summarize_group(name: str, runs: list[Run], metric: str, mode: str,
                     threshold: float | None) -> Row:
  finals, bests, reach = [], [], []
  for run in runs:
    series = finite_series(run, metric)
    if run.state in STOPPED or not series:
      continue
    values = [v for _, v in series]
    finals.append(values[-1])
    bests.append(min(values) if mode == "min" else max(values))
    hits = [] if threshold is None else [
        s for s, v in series if (v <= threshold if mode == "min" else v >= threshold)]
    reach += hits[:1]
  speeds = [float(np.mean([v for _, v in s]))
            for s in (finite_series(r, STEPS_PER_SEC) for r in runs) if s]
  states = dict(collections.Counter(run.state for run in runs))
  return Row(name, len(runs), finals, bests, reach, states,
             float(np.mean(speeds)) if speeds else None)


def summarize(groups: dict[str, list[Run]], metric: str, mode: str,
              threshold: float | None = None) -> list[Row]:
  """One row per group, best final mean first; groups without a final value last."""
  rows = [_summarize_group(name, runs, metric, mode, threshold) for name, runs in groups.items()]
  sign = 1.0 if mode == "min" else -1.0
  return sorted(rows, key=lambda r: (not r.finals, sign * np.mean(r.finals) if r.finals else 0.0))


def markdown_table(rows: list[Row], threshold: float | None = None, log: bool = False) -> str:
  """The rows as a markdown table: runs, n (runs with a final value), the final values' mean
  [95 % t CI] and median, best, steps to `threshold`, diverged/runs, other states where
  nonzero, steps/s."""
  extra = [s for s in ("failed", "running", "preempted") if any(r.states.get(s) for r in rows)]
  head = ["group", "runs", "n", f"final {'geo. mean' if log else 'mean'} [95% CI]", "median",
          "best"]
  head += [f"steps to {threshold:g}"] if threshold is not None else []
  head += ["diverged", *extra, "steps/s"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r.group, str(r.runs), *stats_table.final_cells(r.finals, log),
             stats_table.mean_std_cell(r.bests)]
    cells += [stats_table.reach_cell(r.reach_steps, r.runs)] if threshold is not None else []
    cells += [f"{r.states.get('diverged', 0)}/{r.runs}"] + [str(r.states.get(s, 0)) for s in extra]
    cells.append(f"{r.steps_per_sec:.1f}" if r.steps_per_sec is not None else "–")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _resolve(runs: list[Run], sweep: dict[str, Any], metric: str | None,
             mode: str) -> tuple[str, str]:
  """(metric, mode): --metric, else the sweep file's get_metric(), else the task's."""
  declared = tuple(sweep["metric"]) if sweep.get("metric") else None
  main = declared if declared and (not metric or metric == declared[0]) else default_metric(runs)
  metric = metric or main[0]
  tags = set().union(*(r.scalars for r in runs))
  if metric not in tags:
    raise ValueError(f"metric {metric!r} is in no run; scalar tags: "
                     f"{', '.join(sorted(tags)) or 'none logged yet'}")
  return metric, resolve_mode(metric, mode, main)


def report(directory: str, metric: str | None = None, group_by: list[str] | None = None,
           threshold: float | None = None, mode: str = "auto", out: str | None = None,
           ylim: tuple[float, float] | None = None, baseline: str | None = None,
           log: bool = False, importance: bool = False) -> str:
  """Compares the sweep (or the one run) in `directory` by `metric` (default: the sweep file's
  get_metric(), else the task's main metric), in groups by `group_by` (default: the sweep file's
  get_group_by(), else the members' overrides but the seed), each group against `baseline`
  (default: the sweep file's get_baseline()) if any, and with `importance` each axis' share of the metric's
  variance (importance.py); writes compare.md, compare.png (curves) and compare_final.png
  (final values per group); returns the .md text."""
  from rnn_research.experiments.compare_plot import plot, plot_final  # (matplotlib)

  runs, code = load_runs(directory), provenance.code_fingerprint()
  sweep = _read_json(os.path.join(directory, "sweep.json")) or {}
  metric, mode = _resolve(runs, sweep, metric, mode)
  groups = group_runs(runs, group_by, sweep)
  rows = summarize(groups, metric, mode, threshold)
  base, note = baselines.resolve(groups, sweep, baseline)
  if base is not None and len(rows) > 1:
    n_base = len(next(r for r in rows if r.group == base).finals)
    comparisons = baselines.comparisons(rows, base, mode, log, threshold is not None)
    note = stats_table.markdown(comparisons, base, n_base, mode, log, threshold)
  note = note or (stats_table.NO_BASELINE if len(rows) > 1 else "")
  table = markdown_table(rows, threshold, log) + (f"\n\n{note}" if note else "")
  if importance:
    table += "\n\n" + axis_importance.from_runs(runs, metric, mode, sweep, group_by, log)
  out = out or directory
  date = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
  trained = stale_runs.note(
      stale_runs.of_statuses({r.name: r.status for r in runs if r.status}, code), code)
  text = (f"{table}\n\nmetric: {metric}{' (log)' if log else ''}, mode: {mode}, date: {date}\n"
          f"{trained}\n")
  atomic.write_text(os.path.join(out, "compare.md"), text)
  ordered = {r.group: groups[r.group] for r in rows}
  plot(ordered, metric, mode, os.path.join(out, "compare.png"), ylim)
  plot_final(ordered, metric, mode, os.path.join(out, "compare_final.png"), base, log)
  return text
