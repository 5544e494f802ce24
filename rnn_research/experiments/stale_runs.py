"""Runs trained under other code than there is now, found from what each run recorded.

The trainer records in a run's status.json `code`, the fingerprints of the code it trained
under (training/provenance.py; two or more when it resumed under changed code), and
`commits`, the git commits. A run is stale unless its `code` is exactly [the current
fingerprint]: it trained under other model, task or trainer code, or before `code` was
recorded. `sweep` stops at stale members (sweep_changes.py), the report at stale sweeps
(report.py), and `compare` says under its table which commits its runs trained at and how many
are stale. No jax here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from rnn_research.training.status import read_status, status_path

Status = Mapping[str, Any]


def is_stale(status: Status, code: str) -> bool:
  """Whether a run with this status.json did not train under the fingerprint `code` only."""
  return status.get("code") != [code]


def commits(statuses: Iterable[Status]) -> str:
  """The commits in order of first appearance; "unrecorded" for a run that recorded none."""
  return ", ".join(dict.fromkeys(c for s in statuses for c in s.get("commits") or ["unrecorded"]))


@dataclass(frozen=True)
class Trained:
  """What a set of runs trained under."""
  runs: int  # runs with a status.json
  stale: tuple[str, ...]  # the names of the runs not trained under the current code only
  commits: str  # the commits all runs trained at
  stale_commits: str  # the commits the stale runs trained at


def of_statuses(statuses: Mapping[str, Status], code: str) -> Trained:
  """{run name: status.json} against the fingerprint `code`."""
  stale = tuple(n for n, s in statuses.items() if is_stale(s, code))
  return Trained(len(statuses), stale, commits(statuses.values()),
                 commits(statuses[n] for n in stale))


def trained(directory: str, code: str) -> Trained:
  """The runs of the sweep in `directory` (those compare tables) against the fingerprint
  `code`."""
  names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
  return of_statuses({n: read_status(os.path.join(directory, n)) for n in names
                      if not n.startswith(".") and ".replaced-" not in n
                      and os.path.isfile(status_path(os.path.join(directory, n)))}, code)


def note(t: Trained, code: str) -> str:
  """compare's line under its table: the commits, and the stale runs if any."""
  line = f"trained at: {t.commits}"
  if t.stale:
    line += (f"\n**stale**: {len(t.stale)} of {t.runs} runs trained at {t.stale_commits} under "
             f"other code than there is now (fingerprint {code}): their numbers may not be what "
             "the code gives now; `sweep --rerun_stale` trains them again")
  return line
