"""The baseline group of a comparison: named (`--baseline=<group>`), or declared by the sweep
file's `get_baseline()` as config values ({dotted key: value}) that sweep.json records."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rnn_research.experiments import stats
from rnn_research.training import workdir as run_dir

if TYPE_CHECKING:
  from rnn_research.experiments.compare import Row, Run

SEED_KEY = "train.seed"


def baseline_group(groups: dict[str, list[Run]], wanted: dict[str, Any] | str,
                   sweep: dict[str, Any] | None) -> str:
  """The group named `wanted`, or the one group whose runs all have the config values
  `wanted` ({dotted key: value}); of several, the one whose sweep overrides (without the
  seed) are exactly `wanted`. ValueError naming the groups otherwise."""
  if isinstance(wanted, str) and wanted not in groups:
    raise ValueError(f"unknown baseline {wanted!r}; groups: {', '.join(groups)}")
  if isinstance(wanted, str):
    return wanted
  flats = {r.name: run_dir.flat(r.config) for runs in groups.values() for r in runs}
  found = [g for g, runs in groups.items()
           if all(flats[r.name].get(k) == v for r in runs for k, v in wanted.items())]
  if len(found) > 1:
    exact = {m["name"]: {k: v for k, v in m.get("overrides", {}).items() if k != SEED_KEY}
             for m in (sweep or {}).get("members", [])}
    found = [g for g in found if all(exact.get(r.name) == wanted for r in groups[g])]
  if len(found) != 1:
    raise ValueError(f"baseline {json.dumps(wanted)} matches {len(found)} groups; give "
                     f"--baseline=<group>, one of: {', '.join(groups)}")
  return found[0]


def resolve(groups: dict[str, list[Run]], sweep: dict[str, Any],
              baseline: str | None) -> tuple[str | None, str]:
  """(the baseline group, "") from --baseline, else sweep.json's; (None, why) without one."""
  wanted = baseline if baseline is not None else sweep.get("baseline")
  try:
    return (None if wanted is None else baseline_group(groups, wanted, sweep)), ""
  except ValueError as err:
    if baseline is not None:
      raise
    return None, f"sweep.json's {err}"


def comparisons(rows: list[Row], base: str, mode: str, log: bool = False,
                reached: bool = False) -> list[stats.Comparison]:
  """Every group but `base` against it (stats.against_baseline), in the rows' order; with
  `reached` (a threshold was given) also by the runs that reached it (len(reach_steps))."""
  sample = {r.group: stats.Sample(r.finals, r.states.get("diverged", 0), r.runs,
                                  len(r.reach_steps) if reached else None) for r in rows}
  return stats.against_baseline(sample.pop(base), sample, mode, log)
